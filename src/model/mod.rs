//! The plain values the engine reads and writes: change events in, commands out.
//!
//! These types know nothing of Kafka or Avro. The codec converts wire records into them once, at the
//! edge; the engine, the scenario runner and the tests build them directly.

mod commands;
mod entity;
mod events;
pub mod ordered;

pub use commands::*;
pub use events::*;
