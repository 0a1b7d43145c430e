//! What the state knows about one requester email in one legal entity ([`Requester`]), the entry
//! `requester/<company>/<email>`.

use serde::{Deserialize, Serialize};

use super::CaseKeys;

/// One requester email in one legal entity: the cases whose prospect uses it, and the Sales contact
/// whose Commerce Person customer holds it as its primary email.
///
/// Invariant: at most one Person customer per email and legal entity. Commerce signs a B2B user in
/// by email, and two customers with one primary email in a legal entity lock both out, so the first
/// contact to claim an email ([`Requester::person`]) keeps it; any other contact with that email is
/// held back (not sent) until its email changes, and its prospect's approval is held.
///
/// Written as the bare list of case keys while no Person customer claims the email: byte for byte
/// the entry earlier builds wrote (and read), so their state restores unchanged. With a claim it is
/// `{"cases":[…],"person":"contact/<id>"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requester {
    pub cases: CaseKeys,
    /// The customer link key (`contact/<id>`) of the Person customer that holds this email.
    pub person: Option<String>,
}

impl Requester {
    /// True when nothing refers to this email any more: the entry can be deleted.
    pub fn is_empty(&self) -> bool {
        self.cases.is_empty() && self.person.is_none()
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Stored {
    Cases(CaseKeys),
    Claimed { cases: CaseKeys, person: String },
}

impl Serialize for Requester {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Claimed<'a> {
            cases: &'a CaseKeys,
            person: &'a str,
        }
        match &self.person {
            None => self.cases.serialize(s),
            Some(person) => Claimed {
                cases: &self.cases,
                person,
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Requester {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Requester, D::Error> {
        Ok(match Stored::deserialize(d)? {
            Stored::Cases(cases) => Requester {
                cases,
                person: None,
            },
            Stored::Claimed { cases, person } => Requester {
                cases,
                person: Some(person),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unclaimed_email_is_written_as_earlier_builds_wrote_it_and_a_claim_reads_back() {
        let mut r = Requester::default();
        r.cases.insert("lead-b".into());
        r.cases.insert("lead-a".into());
        assert_eq!(serde_json::to_string(&r).unwrap(), r#"["lead-a","lead-b"]"#);
        let old: Requester = serde_json::from_str(r#"["lead-b","lead-a"]"#).unwrap();
        assert_eq!(old, r);

        r.person = Some("contact/c-1".into());
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(
            json,
            r#"{"cases":["lead-a","lead-b"],"person":"contact/c-1"}"#
        );
        assert_eq!(serde_json::from_str::<Requester>(&json).unwrap(), r);
        assert!(!r.is_empty());
        r.cases = CaseKeys::default();
        assert!(!r.is_empty(), "a claim alone keeps the entry");
        r.person = None;
        assert!(r.is_empty());
    }
}
