//! Avro schemas and typed encoding/decoding (filled in below).
