//! Deterministic identities: every id the engine writes is a function of its inputs.
//!
//! Why: at-least-once delivery and replays send the same input more than once. If ids were random,
//! each replay would create a second lead or a second hierarchy. With UUID v5 (name-based, SHA-1) ids,
//! a replay produces byte-identical commands and the targets' upserts absorb them.
//!
//! The case key is the lead id itself: `uuid5(prospect/<company>/<ProspectId>)`. Every Sales event of a
//! B2B case carries it (`leadid`, or `originatingleadid` on opportunities, contacts and accounts) and
//! every prospect event can compute it, so any event's case is known without a lookup. That is what
//! lets the runtime co-partition all inputs by case.

use uuid::Uuid;

/// The partner-sync namespace for UUID v5 names (fixed forever: changing it changes every id).
const NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_53a2_9d0e_4c7b_8e55_2a41_c3f0_7d19);

/// RFC 9562 UUID v5: SHA-1 of namespace and name, with version and variant bits set. The same value
/// as `Uuid::new_v5` (a test checks it), hashed with the `sha1` crate, which uses the CPU's SHA
/// extensions when it has them: uuid's portable SHA-1 was ~10% of the per-record transform.
fn uuid5(name: &str) -> Uuid {
    uuid5_of([name])
}

/// [`uuid5`] of the concatenation of `parts`, without building it: ids are made per record, and
/// formatting their names cost more than hashing them.
fn uuid5_of<'a>(parts: impl IntoIterator<Item = &'a str>) -> Uuid {
    use sha1::{Digest, Sha1};
    let mut hasher = Sha1::new();
    hasher.update(NAMESPACE.as_bytes());
    for part in parts {
        hasher.update(part.as_bytes());
    }
    let hash = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// The hyphenated lower-case text of a UUID (as `Display` writes it, without the formatter).
fn text(id: Uuid) -> String {
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut buf).to_string()
}

/// The Dataverse `leadid` for a prospect, which is also the case key.
pub fn lead_id(company: &str, prospect_id: &str) -> String {
    text(uuid5_of([
        "prospect/",
        &company.to_lowercase(),
        "/",
        prospect_id,
    ]))
}

/// The key written to the lead's `partnersync_prospectkey` column.
pub fn prospect_key(company: &str, prospect_id: &str) -> String {
    format!("{}/{}", company.to_lowercase(), prospect_id)
}

/// The `annotationid` of the lead's timeline note.
pub fn note_id(lead_id: &str) -> String {
    text(uuid5_of(["note/", lead_id]))
}

/// A command id: the command kind, what it is about, and the change that caused it.
pub fn command_id(kind: &str, subject: &str, cause: &str) -> String {
    command_id_of(kind, &[subject], cause)
}

/// [`command_id`] with its subject given in parts (hashed as their concatenation).
fn command_id_of(kind: &str, subject: &[&str], cause: &str) -> String {
    let parts = ["command/", kind, "/"]
        .into_iter()
        .chain(subject.iter().copied())
        .chain(["/", cause]);
    text(uuid5_of(parts))
}

/// The command id of a customer upsert: [`command_id`] with subject `<company>/<account>`, without
/// building the subject.
pub fn customer_command_id(company: &str, account: &str, cause: &str) -> String {
    command_id_of("customer_upsert", &[company, "/", account], cause)
}

/// Twelve upper-case hex characters derived from a name: short enough for F&O's 20-character keys.
fn short(name: &str) -> String {
    let hex = uuid5(name).simple().to_string();
    hex[..12].to_uppercase()
}

/// A CustomerAccount for a Sales record that has no integration key yet.
pub fn customer_account(prefix: &str, entity: &str, id: &str) -> String {
    format!("{prefix}{}", short(&format!("customer/{entity}/{id}")))
}

/// The customer hierarchy id of a case.
pub fn hierarchy_id(prefix: &str, case: &str) -> String {
    format!("{prefix}{}", short(&format!("hierarchy/{case}")))
}

/// The requester index key: email compared case-insensitively, within one legal entity.
pub fn requester_key(company: &str, email: &str) -> String {
    format!("{}/{}", company.to_lowercase(), email.trim().to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_id_is_stable_and_company_case_insensitive() {
        assert_eq!(lead_id("USRT", "PR-000123"), lead_id("usrt", "PR-000123"));
        assert_ne!(
            lead_id("usrt", "PR-000123"),
            lead_id("usmf", "PR-000123"),
            "the legal entity is part of the key"
        );
        // Pinned (cross-checked with Python's uuid.uuid5): changing the namespace or the name format would orphan every lead already created.
        assert_eq!(
            lead_id("usrt", "PR-000123"),
            "fd3d42f1-85bb-5f86-a03b-6a04e3992cb6"
        );
    }

    #[test]
    fn our_uuid5_is_the_standard_one() {
        for name in ["", "a", "prospect/usrt/PR-000123", &"x".repeat(200)] {
            assert_eq!(
                uuid5(name),
                Uuid::new_v5(&NAMESPACE, name.as_bytes()),
                "{name}"
            );
            assert_eq!(text(uuid5(name)), uuid5(name).to_string());
        }
        assert_eq!(
            command_id("customer_upsert", "usmf/PS-1", "change-9"),
            Uuid::new_v5(&NAMESPACE, b"command/customer_upsert/usmf/PS-1/change-9").to_string()
        );
        assert_eq!(
            customer_command_id("usmf", "PS-1", "change-9"),
            command_id("customer_upsert", "usmf/PS-1", "change-9"),
            "the same id as the subject written whole"
        );
        assert_eq!(
            note_id("abc"),
            Uuid::new_v5(&NAMESPACE, b"note/abc").to_string()
        );
    }

    /// Every id partner-sync derives is stored in Dataverse or Commerce: a silent change of a
    /// derivation would orphan every lead, note, customer and hierarchy already created (and
    /// every command id, which sinks use to drop repeats). These values were computed apart from
    /// this code, with Python's `uuid.uuid5` and the namespace above; they never change.
    #[test]
    fn derived_ids_are_pinned_to_values_computed_apart_from_this_code() {
        let lead = "fd3d42f1-85bb-5f86-a03b-6a04e3992cb6";
        assert_eq!(lead_id("usrt", "PR-000123"), lead);
        assert_eq!(note_id(lead), "13ee297d-a7cc-554b-8cb9-5220bbf11a69");
        assert_eq!(
            customer_account("PS-", "contact", "0c000000-0000-4000-8000-000000000201"),
            "PS-867CC1C30CD0"
        );
        assert_eq!(
            customer_account("PS-", "account", "0f8fad5b-d9cb-469f-a165-70867728950e"),
            "PS-9C0EAB6379E4"
        );
        assert_eq!(hierarchy_id("PSH-", lead), "PSH-81AF06B22EE7");
        assert_eq!(
            customer_command_id("usmf", "PS-1", "change-9"),
            "31632369-7b6b-5c88-b43e-aa8cf0743a6e"
        );
        assert_eq!(
            command_id("prospect_status", lead, "Approved"),
            "f43c87b6-08af-57c7-aaeb-9523cb9dffc0"
        );
        assert_eq!(prospect_key("USRT", "PR-000123"), "usrt/PR-000123");
        assert_eq!(
            requester_key("USRT", " Marta@Fabrikam.COM "),
            "usrt/marta@fabrikam.com"
        );
    }

    #[test]
    fn derived_customer_accounts_fit_the_twenty_character_key() {
        let account = customer_account("PS-", "account", "0f8fad5b-d9cb-469f-a165-70867728950e");
        assert!(
            account.starts_with("PS-") && account.len() == 15,
            "{account}"
        );
        assert_eq!(
            account,
            customer_account("PS-", "account", "0f8fad5b-d9cb-469f-a165-70867728950e")
        );
    }
}
