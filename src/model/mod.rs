//! The plain values the engine reads and writes: change events in, commands out.
//!
//! These types know nothing of Kafka or Avro. The codec converts wire records into them once, at the
//! edge; the engine, the scenario runner and the tests build them directly.

mod commands;
mod entity;
mod events;

pub use commands::*;
pub use events::*;

/// The concatenation of `parts`, allocated once at its length. Keys are built per record (a
/// customer link, a state record key, a command key), and `format!` cost several times as much.
pub fn concat(parts: &[&str]) -> String {
    let mut s = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for p in parts {
        s.push_str(p);
    }
    s
}
