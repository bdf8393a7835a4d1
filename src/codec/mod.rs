//! The reference's text formats, read and written as its Python reads and writes them:
//! YAML 1.1 as PyYAML knows it, and JSON and `repr` as `json.dumps` and Python print
//! them. The client, the connectors and the fuzzers all need them byte for byte.

pub mod pyjson;
pub mod yaml;
