//! Seeded, realistic onboarding stories: the change events a B2B site and a sales team would produce.
//!
//! Used by the property tests (which reorder and duplicate them), the benchmarks (which replay them)
//! and anything else that needs believable traffic. The same seed always gives the same story. Each
//! case is a set of per-record streams: the order inside a stream is the order the source system
//! changed that record, and any merge of the streams is a delivery the connector must handle.

mod names;

use names::{CITIES, COMMENTS, FIRST, KINDS, LAST, STEMS, STREETS, SUFFIXES};

use crate::engine::ids;
use crate::mapping::EngineConfig;
use crate::model::{
    Account, Change, ChangeEvent, ChangeHeader, Contact, Lead, Operation, Opportunity, Prospect,
};

/// How a prospect's story ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Qualified, account and contact created, opportunity won: approved with a hierarchy.
    Won,
    /// Disqualified with this lead statuscode (4–7).
    Disqualified(i32),
    /// Qualified, then the opportunity lost with this statuscode (4 Canceled, 5 Out-Sold).
    Lost(i32),
    /// Disqualified, reactivated, disqualified again: still one rejection email.
    DisqualifiedTwice,
}

/// One prospect's events, as per-record streams.
#[derive(Debug, Clone)]
pub struct CaseStory {
    pub prospect_id: String,
    pub path: Path,
    pub streams: Vec<Vec<ChangeEvent>>,
}

/// A whole story: many prospects.
#[derive(Debug, Clone)]
pub struct Story {
    pub cases: Vec<CaseStory>,
}

impl Story {
    /// Every event in causal order, one case after another.
    pub fn clean(&self) -> Vec<ChangeEvent> {
        self.cases.iter().flat_map(CaseStory::causal).collect()
    }
}

impl CaseStory {
    /// The case's events in the order the systems produced them.
    pub fn causal(&self) -> Vec<ChangeEvent> {
        let mut all: Vec<ChangeEvent> = self.streams.iter().flatten().cloned().collect();
        all.sort_by_key(|e| e.header().modified_on);
        all
    }
}

/// A small, fast, deterministic generator (SplitMix64); good enough to pick names, not for security.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Who writes as a person in generated stories (never the connector's identity).
pub const SALES_PERSON: &str = "3a9e1f00-5c2b-4d7e-8f10-2b3c4d5e6f70";
pub const COMMERCE_PERSON: &str = "commerce-clerk";

/// Generates `prospects` cases from `seed`, starting at `start_ms`, in the configuration's default
/// legal entity. The connector's own writes come back as echoes under `cfg.sales_user`.
pub fn generate(seed: u64, prospects: usize, cfg: &EngineConfig, start_ms: i64) -> Story {
    let mut rng = Rng::new(seed);
    let cases = (0..prospects)
        .map(|i| {
            case(
                &mut rng,
                i,
                None,
                &cfg.default_company,
                &cfg.sales_user,
                start_ms + i as i64 * 10_000,
            )
        })
        .collect();
    Story { cases }
}

/// One case with a chosen `path`, numbered `index` (its ProspectId is `PR-<100000 + index>`).
pub fn generate_case(
    seed: u64,
    index: usize,
    path: Path,
    cfg: &EngineConfig,
    start_ms: i64,
) -> CaseStory {
    case(
        &mut Rng::new(seed),
        index,
        Some(path),
        &cfg.default_company,
        &cfg.sales_user,
        start_ms,
    )
}

fn uuid_like(rng: &mut Rng) -> String {
    let a = rng.next_u64();
    let b = rng.next_u64();
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

fn header(
    op: Operation,
    change: String,
    version: i64,
    at: i64,
    by: &str,
    company: Option<&str>,
) -> ChangeHeader {
    ChangeHeader {
        op,
        change_id: change,
        version,
        modified_on: at,
        modified_by: by.to_string(),
        company: company.map(str::to_string),
    }
}

fn case(
    rng: &mut Rng,
    index: usize,
    forced: Option<Path>,
    company: &str,
    connector: &str,
    t0: i64,
) -> CaseStory {
    let prospect_id = format!("PR-{:06}", 100_000 + index);
    let first = *rng.pick(FIRST);
    let last = *rng.pick(LAST);
    let org = format!(
        "{} {} {}",
        rng.pick(STEMS),
        rng.pick(KINDS),
        rng.pick(SUFFIXES)
    );
    let domain: String = org
        .split_whitespace()
        .next()
        .unwrap_or("example")
        .to_lowercase()
        .replace('\'', "");
    // Unique per case, so no two prospects share a requester by accident.
    let email = format!(
        "{}.{}.{index}@{domain}.example",
        first.to_lowercase(),
        last.to_lowercase()
    );
    let (city, state, country) = *rng.pick(CITIES);
    let street = format!("{} {}", 100 + rng.below(9000), rng.pick(STREETS));
    let path = forced.unwrap_or(match rng.below(10) {
        0..=4 => Path::Won,
        5 | 6 => Path::Disqualified(4 + rng.below(4) as i32),
        7 | 8 => Path::Lost(4 + rng.below(2) as i32),
        _ => Path::DisqualifiedTwice,
    });
    let lead_id = ids::lead_id(company, &prospect_id);
    let change = |what: &str, n: usize| format!("{prospect_id}-{what}-{n}");
    let minute = 60_000;

    let prospect = Prospect {
        prospect_id: prospect_id.clone(),
        relation_type_id: Some("B2B prospect".into()),
        status: Some("New".into()),
        prospect_name: Some(org.clone()),
        contact_first_name: Some(first.into()),
        contact_last_name: Some(last.into()),
        primary_email_address: Some(email.clone()),
        primary_phone_number: Some(format!("+1 425 555 {:04}", rng.below(10_000))),
        address_street: Some(street.clone()),
        address_city: Some(city.into()),
        address_state: Some(state.into()).filter(|s: &String| !s.is_empty()),
        address_zip_code: Some(format!("{:05}", rng.below(100_000))),
        address_country_region_id: Some(country.into()),
        comments: Some(rng.pick(COMMENTS).to_string()).filter(|s| !s.is_empty()),
        store_name: Some("Adventure Works B2B".into()),
        ..Prospect::default()
    };
    let prospect_stream = vec![ChangeEvent::Prospect(Change {
        header: header(
            Operation::Create,
            change("prospect", 1),
            1_000 + index as i64,
            t0,
            COMMERCE_PERSON,
            Some(company),
        ),
        record: prospect,
    })];
    // The connector's own lead write comes back as an echo.
    let mut lead_stream = vec![ChangeEvent::Lead(Change {
        header: header(
            Operation::Create,
            change("lead", 0),
            1,
            t0 + minute,
            connector,
            None,
        ),
        record: Lead {
            leadid: lead_id.clone(),
            partnersync_prospectkey: Some(ids::prospect_key(company, &prospect_id)),
            statecode: 0,
            statuscode: 1,
            ..Lead::default()
        },
    })];
    // Change events carry the whole row, so every lead event has the prospect key the connector wrote.
    let lead = |state: i32, status: i32, opp: Option<String>| Lead {
        leadid: lead_id.clone(),
        partnersync_prospectkey: Some(ids::prospect_key(company, &prospect_id)),
        statecode: state,
        statuscode: status,
        qualifyingopportunityid: opp,
        ..Lead::default()
    };
    let mut streams = Vec::new();
    match path {
        Path::Disqualified(reason) => {
            lead_stream.push(ChangeEvent::Lead(Change {
                header: header(
                    Operation::Update,
                    change("lead", 1),
                    2,
                    t0 + 30 * minute,
                    SALES_PERSON,
                    None,
                ),
                record: lead(2, reason, None),
            }));
        }
        Path::DisqualifiedTwice => {
            for (n, (state, status)) in [(2, 4), (0, 1), (2, 6)].into_iter().enumerate() {
                let v = n as i64 + 2;
                lead_stream.push(ChangeEvent::Lead(Change {
                    header: header(
                        Operation::Update,
                        change("lead", n + 1),
                        v,
                        t0 + (30 + n as i64) * minute,
                        SALES_PERSON,
                        None,
                    ),
                    record: lead(state, status, None),
                }));
            }
        }
        Path::Won | Path::Lost(_) => {
            let opp_id = uuid_like(rng);
            let contact_id = uuid_like(rng);
            let account_id = uuid_like(rng);
            let q = t0 + 60 * minute;
            lead_stream.push(ChangeEvent::Lead(Change {
                header: header(
                    Operation::Update,
                    change("lead", 1),
                    2,
                    q,
                    SALES_PERSON,
                    None,
                ),
                record: lead(1, 3, Some(opp_id.clone())),
            }));
            let contact = Contact {
                contactid: contact_id,
                originatingleadid: Some(lead_id.clone()),
                firstname: Some(first.into()),
                lastname: Some(last.into()),
                emailaddress1: Some(email.clone()),
                jobtitle: Some(
                    rng.pick(&["Purchasing Manager", "Owner", "Operations Lead", "Buyer"])
                        .to_string(),
                ),
                address1_line1: Some(street.clone()),
                address1_city: Some(city.into()),
                address1_country: Some(country.into()),
                ..Contact::default()
            };
            let mut edited = contact.clone();
            edited.telephone1 = Some(format!("+1 206 555 {:04}", rng.below(10_000)));
            streams.push(vec![
                ChangeEvent::Contact(Change {
                    header: header(
                        Operation::Create,
                        change("contact", 1),
                        10,
                        q + 1_000,
                        SALES_PERSON,
                        Some(company),
                    ),
                    record: contact,
                }),
                ChangeEvent::Contact(Change {
                    header: header(
                        Operation::Update,
                        change("contact", 2),
                        11,
                        q + 5 * minute,
                        SALES_PERSON,
                        Some(company),
                    ),
                    record: edited,
                }),
            ]);
            let account = Account {
                accountid: account_id,
                originatingleadid: Some(lead_id.clone()),
                name: Some(org.clone()),
                customertypecode: Some(3),
                emailaddress1: Some(format!("orders@{domain}.example")),
                address1_line1: Some(street),
                address1_city: Some(city.into()),
                address1_country: Some(country.into()),
                ..Account::default()
            };
            streams.push(vec![ChangeEvent::Account(Change {
                header: header(
                    Operation::Create,
                    change("account", 1),
                    20,
                    q + 2_000,
                    SALES_PERSON,
                    Some(company),
                ),
                record: account,
            })]);
            let opp = |state: i32, status: i32| Opportunity {
                opportunityid: opp_id.clone(),
                originatingleadid: Some(lead_id.clone()),
                name: Some(format!("{org} onboarding")),
                statecode: state,
                statuscode: status,
                ..Opportunity::default()
            };
            let (state, status) = match path {
                Path::Lost(reason) => (2, reason),
                _ => (1, 3),
            };
            streams.push(vec![
                ChangeEvent::Opportunity(Change {
                    header: header(
                        Operation::Create,
                        change("opportunity", 1),
                        30,
                        q + 3_000,
                        SALES_PERSON,
                        None,
                    ),
                    record: opp(0, 1),
                }),
                ChangeEvent::Opportunity(Change {
                    header: header(
                        Operation::Update,
                        change("opportunity", 2),
                        31,
                        q + 24 * 60 * minute,
                        SALES_PERSON,
                        None,
                    ),
                    record: opp(state, status),
                }),
            ]);
        }
    }
    streams.insert(0, lead_stream);
    streams.insert(0, prospect_stream);
    CaseStory {
        prospect_id,
        path,
        streams,
    }
}
