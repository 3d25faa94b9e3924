//! A complete control plane on one machine, as real processes on loopback:
//! a private PostgreSQL (or a given database), internal and external DNS
//! servers, and Nexus instances.
//!
//! [`stack::Stack`] starts and controls it; the `devstack` binary runs one
//! for people, and the end-to-end tests run one per test.

pub mod prometheus;
pub mod stack;

pub use stack::{Stack, StackOptions};
