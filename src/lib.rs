//! partner-sync: B2B partner onboarding between Dynamics 365 Commerce and Dynamics 365 Sales, over Kafka.
//!
//! A prospect submitted on the B2B site becomes a Sales lead; qualifying it turns its contact and
//! account into Commerce customers; winning the opportunity approves the prospect and builds the
//! customer hierarchy; disqualifying the lead or losing the opportunity rejects it and requests one
//! rejection email. See `README.md` for use and `docs/ARCHITECTURE.md` for the design.
//!
//! # Layout
//!
//! - [`model`]: the plain values that cross the engine's boundary — change events with the source
//!   systems' field names, and the commands sent to each side; [`model::ordered`] walks a record's
//!   fields in declaration order for the codec. No I/O, no Kafka, no Avro.
//! - [`engine`]: the pure sync core. `Engine::apply(state, event, now)` decides the commands and what
//!   became of the event (emitted, skipped with a reason, parked, rejected). Its state is one
//!   serializable value so the runtime can keep it in a compacted topic; its cases beyond a bound
//!   wait out of memory in a cold store the runtime hands in (`engine::state::ResidentMap`).
//! - [`mapping`]: mapping tables, value maps and templates from configuration, checked once at start.
//! - [`settings`]: the typed settings struct and its layered loading (defaults, file, environment).
//! - [`scenario`]: readable scenario files (events in order → expected commands) and their runner,
//!   behind `partner-sync test-scenarios`.
//! - [`story`]: seeded, realistic onboarding stories, for property tests, benchmarks and demos.
//! - [`registry`]: the Confluent wire format, a caching Schema Registry client, and an in-process
//!   registry that follows Confluent's REST API (for tests and the demo).
//! - [`replay`]: `partner-sync replay` — chosen dead letters sent back to their original topics,
//!   each marked on the dead-letter topic so a second replay does not send it again.
//! - [`demo`]: `partner-sync demo` — the real pipeline on an embedded cluster, a seeded story, and a
//!   summary checked against the engine.
//! - [`runtime`]: the Kafka pipeline — route inputs by case (at once to the apply stage when this
//!   instance owns the case's partition, else through the cases topic), apply the engine with
//!   per-partition state restored from a compacted topic (its cold cases in an unlinked spill file,
//!   `runtime::spill`), produce commands, dead letters, commit what is done.
//! - [`http`]: a minimal HTTP/1.1 server for small JSON and text endpoints.
//! - [`logging`]: JSON logs in a cluster, text on a terminal, with the per-record span.
//! - [`alloc`]: the global allocator (mimalloc).
//! - [`codec`]: the Avro schemas in `schemas/` and typed encoding and decoding of events and commands.

// The module maps (`# Layout` here and in each module) link the private modules they describe:
// this is an application, and its docs are read with `cargo doc --document-private-items`, where
// those links resolve (the test command builds them so, with warnings as errors).
#![allow(rustdoc::private_intra_doc_links)]

/// mimalloc instead of glibc's allocator; see [`alloc`] for why, and why through its C interface.
#[global_allocator]
static ALLOCATOR: alloc::MiMalloc = alloc::MiMalloc;

pub mod alloc;
pub mod codec;
pub mod demo;
pub mod engine;
pub mod http;
pub mod logging;
pub mod mapping;
pub mod model;
pub mod registry;
pub mod replay;
pub mod runtime;
pub mod scenario;
pub mod settings;
pub mod story;
