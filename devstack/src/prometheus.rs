//! An optional real Prometheus beside the stack (`devstack run
//! --prometheus`), scraping every DNS server's and Nexus's `/metrics` and
//! evaluating the project's alerting rules (`monitoring/alerts.yml`), so
//! that the metrics can be looked at, graphed and alerted on while the
//! stack runs.  Needs the `prometheus` binary on the machine (Debian
//! package `prometheus`).

use crate::stack::{Stack, free_port};
use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use test_support::process::ChildProcess;

/// The alerting rules, as shipped (`monitoring/alerts.yml`).
pub const ALERT_RULES: &str = include_str!("../../monitoring/alerts.yml");

/// A running Prometheus; stopped when dropped.
pub struct Prometheus {
    pub address: SocketAddr,
    pub process: ChildProcess,
}

/// The `prometheus` binary, if the machine has one.
pub fn find_binary() -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| PathBuf::from(dir).join("prometheus"))
        .find(|path| path.is_file())
}

/// Starts Prometheus scraping every component of `stack` and evaluating the
/// alerting rules every 5 s, and waits until it is ready.
pub async fn start(stack: &Stack) -> anyhow::Result<Prometheus> {
    let binary =
        find_binary().context("no `prometheus` binary on the PATH (apt-get install prometheus)")?;
    let dir = stack.options.run_dir.join("prometheus");
    std::fs::create_dir_all(&dir)?;
    let target = |address: SocketAddr| format!("'{address}'");
    let dns: Vec<String> = stack.dns_servers.iter().map(|s| target(s.http_address)).collect();
    let nexus: Vec<String> = stack.nexus.iter().map(|n| target(n.address)).collect();
    let rules = dir.join("alerts.yml");
    std::fs::write(&rules, ALERT_RULES)?;
    let config = format!(
        "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n\
         rule_files: ['{}']\nscrape_configs:\n\
         \x20 - job_name: dns-server\n    static_configs:\n      - targets: [{}]\n\
         \x20 - job_name: nexus\n    static_configs:\n      - targets: [{}]\n",
        rules.display(),
        dns.join(", "),
        nexus.join(", ")
    );
    let config_file = dir.join("prometheus.yml");
    std::fs::write(&config_file, config)?;
    let address = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let args = vec![
        format!("--config.file={}", config_file.display()),
        format!("--storage.tsdb.path={}", dir.join("data").display()),
        format!("--web.listen-address={address}"),
    ];
    let process = ChildProcess::start_plain(
        "prometheus",
        &binary,
        &args,
        &stack.options.run_dir.join("prometheus.log"),
    )?;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http.get(format!("http://{address}/-/ready")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            return Ok(Prometheus { address, process });
        }
        if Instant::now() > deadline {
            bail!("Prometheus did not become ready within 30 s; see its log in the run directory");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
