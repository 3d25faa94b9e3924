//! The background task framework: every part of Nexus that works in the
//! background reports what it did, when, why and with what result, without
//! the task having to think about it.
//!
//! A task is an async function that is *activated*, does its work, and
//! returns a typed status.  The framework:
//!
//! - activates it when its period has elapsed since the last activation
//!   ended, when a value it watches changes (another task published it on a
//!   `tokio::sync::watch` channel), or when someone asks ([`Activator`]);
//!   the reason is recorded with its detail;
//! - runs one activation at a time per task: requests made while it runs
//!   coalesce into exactly one more activation right after it;
//! - records the current state (idle, or running since when and why), the
//!   last completed activation and a bounded history ([`BackgroundTask`]);
//! - records how each activation ended as a typed outcome (succeeded,
//!   failed with the state the task kept, panicked, timed out) and keeps
//!   scheduling the task;
//! - lets a requester wait for the activation its request caused
//!   ([`ActivationTicket::wait`]).
//!
//! It knows nothing about DNS, SQL or Nexus.
//!
//! # Example
//!
//! ```
//! use background_tasks::{Activation, DriverBuilder, Task, TaskDefinition};
//! use serde::Serialize;
//! use std::time::Duration;
//!
//! /// Counts its activations.
//! struct Counter(u64);
//!
//! #[derive(Serialize)]
//! struct CounterStatus {
//!     count: u64,
//! }
//!
//! impl Task for Counter {
//!     type Status = CounterStatus;
//!     async fn activate(&mut self, _: &Activation) -> anyhow::Result<CounterStatus> {
//!         self.0 += 1;
//!         Ok(CounterStatus { count: self.0 })
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let mut builder = DriverBuilder::new();
//! let counter = builder.register(TaskDefinition::new(
//!     "counter",
//!     "counts its activations",
//!     Duration::from_secs(60),
//!     Counter(0),
//! ))?;
//! let driver = builder.start();
//!
//! // Ask for an activation and wait for the one that covers the request.
//! let record = counter.activate("the example").wait().await?;
//! assert!(record.details["count"].as_u64().unwrap() >= 1);
//! println!("{}", serde_json::to_string_pretty(&driver.status("counter")?)?);
//! driver.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod driver;

pub use background_task_types::{
    ActivationOutcome, ActivationReason, ActivationRecord, BackgroundTask, CurrentStatus,
    LastActivation,
};
pub use driver::{
    Activation, ActivationObserver, ActivationTicket, Activator, DEFAULT_HISTORY_LEN, Driver,
    DriverBuilder, DriverStopped, RegistrationError, Task, TaskDefinition, UnknownTask,
};
