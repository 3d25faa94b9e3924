//! The end-to-end tests, one binary (one link on a 2-core machine, not one
//! per file): real PostgreSQL, real DNS servers, real Nexus processes, real
//! omdb runs.  Each module is one concern; `common` holds the helpers.

mod alerts;
mod architecture;
mod chaos;
mod common;
mod devstack;
mod devstack_db_url;
mod docs;
mod explain;
mod hardening;
mod history;
mod netns;
mod nexus_api;
mod omdb_mends;
mod operations;
mod propagation;
mod replicated;
mod schemathesis;
mod tidy;
mod trust;
