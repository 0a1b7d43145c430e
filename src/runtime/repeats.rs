//! One log line per distinct condition per interval, with how many were left out.
//!
//! librdkafka reports the same condition many times a second while brokers are unreachable (every
//! connection attempt, for every client): without a bound, a pod logged 802 warnings in 61 s
//! (about 47,000 an hour). A condition is a key (the client and the error code); its first report
//! is logged at once, later ones within [`CLIENT_WARNINGS_EVERY`] are counted, and the next line
//! says how many were left out.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

/// How often one condition of a Kafka client may be logged.
pub const CLIENT_WARNINGS_EVERY: Duration = Duration::from_secs(30);

/// The process's bound on Kafka clients' repeated warnings. Process-wide on purpose: the clients
/// are made again when the pipeline starts again after a fault, and the bound must hold across.
pub static CLIENT_WARNINGS: LazyLock<Repeats> =
    LazyLock::new(|| Repeats::new(CLIENT_WARNINGS_EVERY));

/// Conditions seen, each with when it was last logged and how many reports were left out since.
pub struct Repeats {
    every: Duration,
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl Repeats {
    pub fn new(every: Duration) -> Repeats {
        Repeats {
            every,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a report of `key` at `now` is to be logged; if so, how many reports of it were left
    /// out since its last line.
    pub fn admit(&self, key: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().expect("repeats");
        match seen.get_mut(key) {
            Some((last, left_out)) if now.duration_since(*last) < self.every => {
                *left_out += 1;
                None
            }
            Some((last, left_out)) => {
                *last = now;
                Some(std::mem::take(left_out))
            }
            None => {
                seen.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_is_logged_once_per_interval_with_the_count_left_out() {
        let repeats = Repeats::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(repeats.admit("consumer/AllBrokersDown", at(0)), Some(0));
        for s in 1..30 {
            assert_eq!(repeats.admit("consumer/AllBrokersDown", at(s)), None);
        }
        // Another condition has its own interval.
        assert_eq!(repeats.admit("producer/AllBrokersDown", at(5)), Some(0));
        assert_eq!(
            repeats.admit("consumer/AllBrokersDown", at(30)),
            Some(29),
            "the next line says how many were left out"
        );
        assert_eq!(repeats.admit("consumer/AllBrokersDown", at(31)), None);
        assert_eq!(repeats.admit("consumer/AllBrokersDown", at(61)), Some(1));
    }
}
