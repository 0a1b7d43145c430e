//! W3C Trace Context across the connector: the `traceparent` of an input record continues on every
//! record written because of it.
//!
//! The connector's handling of a record is one span of the caller's trace: outputs carry the input's
//! trace id with a new parent id (our span) and the input's flags; `tracestate` passes unchanged. The
//! span id is derived from the trace id and the change id instead of drawn at random, so a record
//! processed again after a restart writes byte-identical headers — duplicates stay identical.
//! A missing or malformed `traceparent` is not invented or forwarded: outputs then carry none.

/// The header names of the W3C Trace Context specification.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// A parsed `traceparent` (version 00 fields).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub parent_id: String,
    pub flags: String,
}

fn is_lower_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl TraceParent {
    /// Parses a header value per the specification: `version-traceid-parentid-flags`, lowercase hex,
    /// ids not all zero, version `ff` invalid, and nothing after the flags for version 00.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        let text = std::str::from_utf8(value).ok()?.trim();
        let mut parts = text.splitn(5, '-');
        let version = parts.next()?;
        let trace_id = parts.next()?;
        let parent_id = parts.next()?;
        let flags = parts.next()?;
        let rest = parts.next();
        let valid = is_lower_hex(version, 2)
            && version != "ff"
            && is_lower_hex(trace_id, 32)
            && trace_id.bytes().any(|b| b != b'0')
            && is_lower_hex(parent_id, 16)
            && parent_id.bytes().any(|b| b != b'0')
            && is_lower_hex(flags, 2)
            && (version != "00" || rest.is_none());
        valid.then(|| TraceParent {
            trace_id: trace_id.to_string(),
            parent_id: parent_id.to_string(),
            flags: flags.to_string(),
        })
    }

    /// The span of our handling of `change_id`: same trace, a parent id derived from both.
    pub fn child(&self, change_id: &str) -> TraceParent {
        // FNV-1a, 64 bits: stable across builds and platforms (std's hasher is not).
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in self.trace_id.bytes().chain([b'/']).chain(change_id.bytes()) {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        TraceParent {
            trace_id: self.trace_id.clone(),
            parent_id: format!("{:016x}", hash.max(1)),
            flags: self.flags.clone(),
        }
    }

    pub fn header_value(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }
}

/// The caller's trace context of an input with `input` headers, if it carries a valid one.
pub fn incoming(input: &[(String, Vec<u8>)]) -> Option<TraceParent> {
    input
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(TRACEPARENT))
        .and_then(|(_, v)| TraceParent::parse(v))
}

/// The headers for records written because of an input with `input` headers: every header copied,
/// `traceparent` replaced by our span's (or dropped when malformed). Returns our span, if any.
pub fn output_headers(
    input: &[(String, Vec<u8>)],
    change_id: &str,
) -> (Vec<(String, Vec<u8>)>, Option<TraceParent>) {
    let ours = incoming(input).map(|p| p.child(change_id));
    let mut out = Vec::with_capacity(input.len());
    for (k, v) in input {
        if k.eq_ignore_ascii_case(TRACEPARENT) {
            if let Some(p) = &ours {
                out.push((TRACEPARENT.to_string(), p.header_value().into_bytes()));
            }
        } else if k.eq_ignore_ascii_case(TRACESTATE) && ours.is_none() {
            // tracestate without a valid traceparent is meaningless; the specification drops it.
        } else {
            out.push((k.clone(), v.clone()));
        }
    }
    (out, ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_the_specification_example() {
        let p = TraceParent::parse(VALID.as_bytes()).unwrap();
        assert_eq!(p.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.parent_id, "00f067aa0ba902b7");
        assert_eq!(p.flags, "01");
        assert_eq!(p.header_value(), VALID);
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn accepts_future_versions_with_more_fields() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-whatever";
        assert!(TraceParent::parse(v.as_bytes()).is_some());
    }

    #[test]
    fn outputs_continue_the_trace_with_a_stable_span_of_ours() {
        let input = vec![
            ("traceparent".to_string(), VALID.as_bytes().to_vec()),
            ("tracestate".to_string(), b"congo=t61rcWkgMzE".to_vec()),
            ("x-app".to_string(), b"b2b".to_vec()),
        ];
        let (out, span) = output_headers(&input, "change-1");
        let span = span.unwrap();
        assert_eq!(span.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(span.parent_id, "00f067aa0ba902b7");
        assert_eq!(out[0].1, span.header_value().into_bytes());
        assert_eq!(out[1], input[1]);
        assert_eq!(out[2], input[2]);
        // Processing the same record again writes the same headers.
        assert_eq!(output_headers(&input, "change-1").0, out);
        // Another change in the same trace gets another span.
        assert_ne!(
            output_headers(&input, "change-2").1.unwrap().parent_id,
            span.parent_id
        );
    }

    #[test]
    fn a_malformed_traceparent_is_dropped_with_its_tracestate() {
        let input = vec![
            ("traceparent".to_string(), b"garbage".to_vec()),
            ("tracestate".to_string(), b"a=b".to_vec()),
            ("x-app".to_string(), b"b2b".to_vec()),
        ];
        let (out, span) = output_headers(&input, "change-1");
        assert_eq!(span, None);
        assert_eq!(out, vec![("x-app".to_string(), b"b2b".to_vec())]);
    }
}
