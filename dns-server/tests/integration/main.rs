//! The DNS server's integration tests, one binary: real servers on real
//! sockets (in process or as processes), real DNS over UDP and TCP, real
//! HTTP.  Each module is one concern; `common` holds the helpers.

mod common;
mod config_api;
mod differences;
mod dns;
mod hardening;
mod history;
mod identity;
mod knot_differential;
mod transfer;
