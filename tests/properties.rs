//! Properties of the engine over generated onboarding stories.
//!
//! The domain of these properties: stories whose outcome does not depend on a race between two
//! different records (no prospect edit racing a decision, no two opportunities racing, no shared
//! requester email). For those, the order in which Kafka delivers the records, and how often it
//! delivers each, must not change what the connector asks the two systems to do.

use std::collections::BTreeMap;

use partner_sync::engine::{Disposition, Engine, EngineState};
use partner_sync::mapping::EngineConfig;
use partner_sync::model::{ChangeEvent, Command};
use partner_sync::story::{self, Rng, Story};
use proptest::prelude::*;

const START_MS: i64 = 1_772_442_000_000;

fn engine() -> Engine {
    Engine::new(EngineConfig::defaults())
}

/// Runs events in order; returns every command and asserts nothing was left parked or rejected.
fn run(engine: &Engine, events: Vec<ChangeEvent>) -> (Vec<Command>, EngineState) {
    let mut state = EngineState::default();
    let mut commands = Vec::new();
    for event in events {
        let decision = engine.apply(&mut state, event, START_MS);
        assert!(
            !matches!(decision.disposition, Disposition::Rejected(_)),
            "{:?}",
            decision.disposition
        );
        commands.extend(decision.commands);
    }
    let parked: usize = state.cases.resident_values().map(|c| c.parked.len()).sum();
    assert_eq!(
        parked, 0,
        "every parked event must be completed by the end of the story"
    );
    (commands, state)
}

/// Merges the per-record streams of every case in a random order that keeps each stream's own order,
/// and re-delivers some events at a random later point.
fn deliver(story: &Story, seed: u64, duplicate_per_mille: usize) -> Vec<ChangeEvent> {
    let mut rng = Rng::new(seed);
    let mut streams: Vec<std::collections::VecDeque<ChangeEvent>> = story
        .cases
        .iter()
        .flat_map(|c| c.streams.iter().map(|s| s.iter().cloned().collect()))
        .collect();
    let mut out: Vec<ChangeEvent> = Vec::new();
    let mut redeliveries: Vec<ChangeEvent> = Vec::new();
    loop {
        let live: Vec<usize> = (0..streams.len())
            .filter(|i| !streams[*i].is_empty())
            .collect();
        if live.is_empty() && redeliveries.is_empty() {
            break;
        }
        // Sometimes deliver a pending duplicate instead of a fresh event.
        if !redeliveries.is_empty() && (live.is_empty() || rng.below(4) == 0) {
            let i = rng.below(redeliveries.len());
            out.push(redeliveries.swap_remove(i));
            continue;
        }
        let pick = live[rng.below(live.len())];
        let event = streams[pick].pop_front().expect("live stream");
        if rng.below(1000) < duplicate_per_mille {
            redeliveries.push(event.clone());
        }
        out.push(event);
    }
    out
}

fn by_id(commands: &[Command]) -> BTreeMap<String, Command> {
    let mut map = BTreeMap::new();
    for c in commands {
        let previous = map.insert(c.command_id().to_string(), c.clone());
        assert!(
            previous.is_none(),
            "command {} was emitted twice: {c:?}",
            c.command_id()
        );
    }
    map
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any interleaving that keeps each record's own order, with any duplicates, yields exactly the
    /// commands of the clean run: none missing, none extra, none twice, byte-identical content.
    #[test]
    fn reordered_and_duplicated_delivery_converges_to_the_clean_run(
        story_seed in any::<u64>(),
        delivery_seed in any::<u64>(),
        prospects in 1usize..8,
        duplicate_per_mille in 0usize..600,
    ) {
        let engine = engine();
        let story = story::generate(story_seed, prospects, engine.config(), START_MS);
        let (clean, clean_state) = run(&engine, story.clean());
        let (shuffled, shuffled_state) = run(&engine, deliver(&story, delivery_seed, duplicate_per_mille));
        prop_assert_eq!(by_id(&clean), by_id(&shuffled));
        let outcomes = |s: &EngineState| s.cases.to_vec().into_iter().map(|(k, c)| (k, c.outcome)).collect::<BTreeMap<_, _>>();
        prop_assert_eq!(outcomes(&clean_state), outcomes(&shuffled_state));
    }

    /// Replaying the same input from an empty state gives byte-identical output (ids derive from inputs).
    #[test]
    fn replaying_the_same_input_gives_byte_identical_commands(story_seed in any::<u64>(), prospects in 1usize..6) {
        let engine = engine();
        let story = story::generate(story_seed, prospects, engine.config(), START_MS);
        let first = serde_json::to_string(&run(&engine, story.clean()).0).unwrap();
        let second = serde_json::to_string(&run(&engine, story.clean()).0).unwrap();
        prop_assert_eq!(first, second);
    }

    /// The state survives serialization at any point: a replica that restores it mid-stream continues
    /// exactly as the one that had it in memory.
    #[test]
    fn state_restored_mid_stream_continues_identically(story_seed in any::<u64>(), cut in any::<prop::sample::Index>()) {
        let engine = engine();
        let events = story::generate(story_seed, 4, engine.config(), START_MS).clean();
        // A restore point after at least one event and before the last: every case restores.
        assert!(events.len() >= 2, "a story of four prospects has events");
        let cut = 1 + cut.index(events.len() - 1);
        let mut restores = 0;
        let mut kept = EngineState::default();
        let mut restored = EngineState::default();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for (i, event) in events.into_iter().enumerate() {
            if i == cut {
                // Through the records the runtime writes: every entry, then a restore.
                let mut fresh = EngineState::default();
                for key in restored.keys() {
                    fresh.restore_entry(&key, restored.entry_json(&key).as_deref()).unwrap();
                }
                restored = fresh;
                restores += 1;
            }
            a.extend(engine.apply(&mut kept, event.clone(), START_MS).commands);
            b.extend(engine.apply(&mut restored, event, START_MS).commands);
        }
        prop_assert_eq!(restores, 1, "the state was restored once, mid-stream");
        prop_assert_eq!(a, b);
        prop_assert_eq!(kept, restored);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// A state that holds only its few most recently used cases and customer links in memory (the
    /// rest as their entries' JSON in a cold store) decides every event exactly as one that holds
    /// them all: the same disposition, commands and touched entries, each entry written with the
    /// same bytes, the same events expired at the end, and the same state.
    #[test]
    fn a_state_holding_few_cases_in_memory_decides_exactly_as_one_holding_all(
        story_seed in any::<u64>(),
        delivery_seed in any::<u64>(),
        prospects in 2usize..12,
        resident in 1usize..5,
    ) {
        use partner_sync::engine::state::{ColdStores, MemoryCold};
        let engine = engine();
        let story = story::generate(story_seed, prospects, engine.config(), START_MS);
        let mut all = EngineState::default();
        let mut few = EngineState::default();
        let cold = || Box::new(MemoryCold::default());
        let stores = ColdStores { cases: cold(), customers: cold(), requesters: cold() };
        few.spill_to(stores, resident);
        for event in deliver(&story, delivery_seed, 200) {
            let a = engine.apply(&mut all, event.clone(), START_MS);
            let b = engine.apply(&mut few, event, START_MS);
            prop_assert_eq!(format!("{:?}", a.disposition), format!("{:?}", b.disposition));
            prop_assert_eq!(&a.commands, &b.commands);
            prop_assert_eq!(&a.touched, &b.touched);
            for key in &a.touched {
                prop_assert_eq!(all.entry_json(key), few.entry_json(key), "entry {:?}", key);
            }
            // After each decision, cases beyond the bound left memory, unless their parked events
            // pin them there, and customer links beyond twice the bound.
            let pinned = few.cases.resident_values().filter(|c| !c.parked.is_empty()).count();
            prop_assert!(few.cases.resident_len() <= resident.max(pinned), "{} cases in memory, {} pinned", few.cases.resident_len(), pinned);
            prop_assert!(few.customers.resident_len() <= 2 * resident, "{} customer links in memory", few.customers.resident_len());
        }
        prop_assert_eq!(all.keys(), few.keys());
        let later = START_MS + 10 * 86_400_000;
        let expired = |s: &mut EngineState| format!("{:?}", engine.expire(s, later));
        prop_assert_eq!(expired(&mut all), expired(&mut few));
        prop_assert_eq!(all, few);
    }

    /// Writing only the entries each decision reports as touched (as the runtime does, one compacted
    /// record per entry) and restoring them rebuilds exactly the in-memory state, whatever the order.
    #[test]
    fn persisting_touched_entries_rebuilds_the_state(story_seed in any::<u64>(), delivery_seed in any::<u64>(), prospects in 1usize..6) {
        let engine = engine();
        let story = story::generate(story_seed, prospects, engine.config(), START_MS);
        let mut state = EngineState::default();
        let mut log: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        for event in deliver(&story, delivery_seed, 200) {
            for key in engine.apply(&mut state, event, START_MS).touched {
                log.insert(key.to_record_key(), state.entry_json(&key));
            }
        }
        let mut restored = EngineState::default();
        for (key, value) in &log {
            let key = partner_sync::engine::StateKey::parse(key).expect("record keys parse back");
            restored.restore_entry(&key, value.as_deref()).unwrap();
        }
        prop_assert_eq!(restored, state);
    }
}

/// Each story path ends as the domain says, and rejection emails are one per rejected prospect.
#[test]
fn every_story_path_ends_in_its_decision_with_at_most_one_email() {
    let engine = engine();
    let story = story::generate(7, 200, engine.config(), START_MS);
    let (commands, _) = run(&engine, story.clean());
    let count = |pred: &dyn Fn(&Command) -> bool| commands.iter().filter(|c| pred(c)).count();
    let won = story
        .cases
        .iter()
        .filter(|c| c.path == story::Path::Won)
        .count();
    let rejected = story.cases.len() - won;
    assert!(
        won > 0 && rejected > 0,
        "the generator must produce both outcomes"
    );
    assert_eq!(
        count(&|c| matches!(c, Command::LeadUpsert(l) if l.is_create)),
        story.cases.len()
    );
    assert_eq!(count(&|c| matches!(c, Command::CustomerHierarchy(_))), won);
    assert_eq!(
        count(&|c| matches!(c, Command::ProspectStatus(s) if s.status == "Approved")),
        won
    );
    assert_eq!(
        count(&|c| matches!(c, Command::ProspectStatus(s) if s.status == "Rejected")),
        rejected
    );
    assert_eq!(
        count(&|c| matches!(c, Command::RejectionEmail(_))),
        rejected
    );
    assert_eq!(
        count(&|c| matches!(c, Command::Alert(_))),
        0,
        "a clean story raises no alert"
    );
}

/// The story with the requester email of the cases `sharing` selects (a bit per case) replaced by
/// one email, written in varied case on each, in prospects and contacts alike.
fn share_one_email(story: &mut Story, sharing: u64) -> Vec<String> {
    let spellings = [
        "pat@shared.example",
        "Pat@Shared.example",
        "PAT@shared.example ",
    ];
    let mut shared = Vec::new();
    for (i, case) in story.cases.iter_mut().enumerate() {
        if sharing & (1 << i) == 0 {
            continue;
        }
        shared.push(case.prospect_id.clone());
        let email = spellings[i % spellings.len()].to_string();
        for event in case.streams.iter_mut().flatten() {
            match event {
                ChangeEvent::Prospect(c) => c.record.primary_email_address = Some(email.clone()),
                ChangeEvent::Contact(c) if c.record.emailaddress1.is_some() => {
                    c.record.emailaddress1 = Some(email.clone())
                }
                _ => {}
            }
        }
    }
    shared
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Never two Person customers with one primary email in one legal entity, whatever the order
    /// in which the prospects, contacts and decisions of the cases that share it arrive: the
    /// first contact sent keeps the email, every other is held back, at most one of the sharing
    /// prospects is approved, and every hierarchy's admin is a customer that was sent.
    #[test]
    fn no_two_person_customers_share_an_email_under_any_interleaving(
        story_seed in any::<u64>(),
        delivery_seed in any::<u64>(),
        prospects in 2usize..7,
        sharing in any::<u64>(),
        duplicate_per_mille in 0usize..400,
    ) {
        let engine = engine();
        let mut story = story::generate(story_seed, prospects, engine.config(), START_MS);
        // At least two cases share the email.
        let sharing = sharing | 0b11;
        let shared = share_one_email(&mut story, sharing);
        let (commands, _) = run(&engine, deliver(&story, delivery_seed, duplicate_per_mille));

        let mut accounts_by_email: BTreeMap<(String, String), std::collections::BTreeSet<String>> = BTreeMap::new();
        let mut persons = std::collections::BTreeSet::new();
        for c in &commands {
            if let Command::CustomerUpsert(u) = c {
                if u.party_type == "Person" {
                    persons.insert(u.customer_account.clone());
                    if let Some(email) = &u.primary_contact_email {
                        accounts_by_email
                            .entry((u.data_area_id.clone(), email.trim().to_lowercase()))
                            .or_default()
                            .insert(u.customer_account.clone());
                    }
                }
            }
        }
        for ((company, email), accounts) in &accounts_by_email {
            prop_assert!(accounts.len() == 1, "{email} in {company} is the email of Person customers {accounts:?}");
        }
        let approved: Vec<&str> = commands
            .iter()
            .filter_map(|c| match c {
                Command::ProspectStatus(s) if s.status == "Approved" && shared.contains(&s.prospect_id) => Some(s.prospect_id.as_str()),
                _ => None,
            })
            .collect();
        prop_assert!(approved.len() <= 1, "prospects {approved:?} sharing one email were all approved");
        for c in &commands {
            if let Command::CustomerHierarchy(h) = c {
                prop_assert!(persons.contains(&h.admin_customer_account), "admin {} was never sent", h.admin_customer_account);
            }
        }
        // Each won prospect of the group that was not approved says why, in an alert.
        let won_held = story
            .cases
            .iter()
            .filter(|c| c.path == story::Path::Won && shared.contains(&c.prospect_id) && !approved.contains(&c.prospect_id.as_str()))
            .count();
        let hold_alerts = commands
            .iter()
            .filter_map(|c| match c {
                Command::Alert(a)
                    if matches!(a.kind.as_str(), "email_taken" | "duplicate_requester")
                        && a.message.contains("was won") =>
                {
                    a.prospect_id.clone()
                }
                _ => None,
            })
            .collect::<std::collections::BTreeSet<_>>();
        prop_assert_eq!(hold_alerts.len(), won_held, "won but not approved, with an alert each");
    }
}
