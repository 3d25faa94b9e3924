//! The database layer's tests against a real PostgreSQL, one binary.

mod dns;
mod schema;
mod send_probe;
