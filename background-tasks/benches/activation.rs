//! Activation overhead: a no-op task activated 100,000 times, each time
//! waiting for the activation to complete.
//!
//! Run: `cargo bench -p background-tasks --bench activation`
//! (figures are recorded in docs/PERFORMANCE.md).

use background_tasks::{Activation, DriverBuilder, Task, TaskDefinition};
use std::time::{Duration, Instant};

struct Noop;

impl Task for Noop {
    type Status = ();
    async fn activate(&mut self, _: &Activation) -> anyhow::Result<()> {
        Ok(())
    }
}

const ACTIVATIONS: u32 = 100_000;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("activation: run with `cargo bench -p background-tasks --bench activation`");
        return;
    }
    for flavor in ["current_thread", "multi_thread"] {
        let runtime = match flavor {
            "current_thread" => tokio::runtime::Builder::new_current_thread(),
            _ => tokio::runtime::Builder::new_multi_thread(),
        }
        .enable_all()
        .build()
        .unwrap();
        runtime.block_on(async {
            let mut builder = DriverBuilder::new();
            let activator = builder
                .register(TaskDefinition::new(
                    "noop",
                    "does nothing",
                    Duration::from_secs(3600),
                    Noop,
                ))
                .unwrap();
            let driver = builder.start();
            let started = Instant::now();
            for _ in 0..ACTIVATIONS {
                activator.activate("bench").wait().await.unwrap();
            }
            let elapsed = started.elapsed();
            println!(
                "{flavor:>14}: {ACTIVATIONS} awaited activations in {elapsed:.2?} = {:.2?} each",
                elapsed / ACTIVATIONS
            );
            driver.shutdown().await;
        });
    }
}
