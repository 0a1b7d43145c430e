//! What a Kafka client's refusal means for the connector: one table, consulted wherever a
//! produce, delivery or fetch error arrives.
//!
//! - [`ErrorClass::Record`]: this record can never be written as it is (too large, refused by the
//!   broker's validation). It becomes a dead letter; the records behind it flow.
//! - [`ErrorClass::Fatal`]: nothing will work until a person changes something (credentials,
//!   ACLs, another instance took over the transactional id). The process exits with a sentence.
//! - [`ErrorClass::Retriable`]: everything else — timeouts, a broker down or restarting, a leader
//!   moving. The runtime starts the pipeline again in-process from the committed offsets and the
//!   state topic, as a restarted process would, after a back-off (`runtime::run_with`), so an
//!   outage longer than `message_timeout_ms` costs repeated outputs, never a crash loop.
//!
//! A fenced producer is retriable here: the idempotent producer of the at-least-once mode is fenced
//! when the broker moved its producer epoch on (after an outage, say), and a new producer gets a new
//! id. The transactional producer's fencing (another instance took its transactional id) is decided
//! by the transaction code, which stops (`pipeline/transaction.rs`).
//!
//! A code not listed is retriable: a connector that waits and retries a condition it does not know
//! is what Kafka's own clients do, and the recoveries are counted
//! (`partnersync_recoveries_total`) and logged with the error.

use rdkafka::types::RDKafkaErrorCode as Code;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    Retriable,
    Record,
    Fatal,
}

/// The code of a client error (`Unknown` for one librdkafka gave none, such as a canceled request).
pub fn code_of(error: &rdkafka::error::KafkaError) -> Code {
    error.rdkafka_error_code().unwrap_or(Code::Unknown)
}

/// The class of a client or broker error code.
pub fn classify(code: Code) -> ErrorClass {
    match code {
        Code::MessageSizeTooLarge
        | Code::InvalidMessageSize
        | Code::InvalidMessage
        | Code::InvalidRecord
        | Code::InvalidTimestamp
        | Code::PolicyViolation
        | Code::BadMessage => ErrorClass::Record,
        Code::TopicAuthorizationFailed
        | Code::GroupAuthorizationFailed
        | Code::ClusterAuthorizationFailed
        | Code::TransactionalIdAuthorizationFailed
        | Code::SaslAuthenticationFailed
        | Code::Authentication
        | Code::UnsupportedSASLMechanism
        | Code::IllegalSASLState
        | Code::SSL
        | Code::InvalidConfig
        | Code::InvalidArgument
        | Code::InvalidRequiredAcks
        | Code::UnsupportedForMessageFormat
        | Code::UnsupportedCompressionType
        | Code::InvalidTransactionTimeout => ErrorClass::Fatal,
        _ => ErrorClass::Retriable,
    }
}

/// What a person should do about a fatal error, after librdkafka's own message.
pub fn what_to_fix(code: Code) -> &'static str {
    match code {
        Code::TopicAuthorizationFailed
        | Code::GroupAuthorizationFailed
        | Code::ClusterAuthorizationFailed
        | Code::TransactionalIdAuthorizationFailed => {
            "Grant the connector's principal the ACLs README \"Topics\" lists (read and write on its topics, read on its group, and with exactly-once write on its transactional id)"
        }
        Code::SaslAuthenticationFailed
        | Code::Authentication
        | Code::UnsupportedSASLMechanism
        | Code::IllegalSASLState => {
            "Check kafka.sasl_mechanism, kafka.sasl_username and the password or connection string"
        }
        Code::SSL => "Check the broker's certificate and kafka.ssl_ca_location",
        _ => "Check the kafka settings against what the cluster supports",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_retriable_a_record_too_large_is_the_records_and_a_refused_login_is_fatal() {
        for code in [
            Code::MessageTimedOut,
            Code::AllBrokersDown,
            Code::BrokerTransportFailure,
            Code::RequestTimedOut,
            Code::NotLeaderForPartition,
            Code::LeaderNotAvailable,
            Code::NotEnoughReplicas,
            Code::QueueFull,
            Code::UnknownTopicOrPartition,
            Code::UnknownTopic,
            Code::ProducerFenced,
        ] {
            assert_eq!(classify(code), ErrorClass::Retriable, "{code:?}");
        }
        for code in [
            Code::MessageSizeTooLarge,
            Code::InvalidRecord,
            Code::InvalidMessage,
        ] {
            assert_eq!(classify(code), ErrorClass::Record, "{code:?}");
        }
        for code in [
            Code::TopicAuthorizationFailed,
            Code::SaslAuthenticationFailed,
        ] {
            assert_eq!(classify(code), ErrorClass::Fatal, "{code:?}");
            assert!(what_to_fix(code).len() > 20);
        }
    }
}
