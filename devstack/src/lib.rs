//! A complete control plane on one machine, as real processes on loopback:
//! a private PostgreSQL (or a given database), internal and external DNS
//! servers, and Nexus instances.
//!
//! [`stack::Stack`] starts and controls it; the `devstack` binary runs one
//! for people, and the end-to-end tests run one per test; [`describe`]
//! says where each component runs (`stack.json`, `env`) and [`control`]
//! stops and starts one of them in a running stack.

pub mod control;
pub mod describe;
pub mod faults;
pub mod prometheus;
pub mod stack;

pub use stack::{Stack, StackOptions};
