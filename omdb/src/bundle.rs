//! `omdb dns bundle`: one archive (`.tar.gz`) of everything omdb can gather
//! about DNS, to hand to someone else or to read after the system changed.
//!
//! One step per source (the database, each Nexus, each DNS server, the
//! wire), each written as it is gathered; a step that fails is recorded as
//! `<file>_err.txt` beside where its file would have been, never dropped,
//! so the bundle says what it could not see.  `manifest.json` says when it
//! was taken, by which omdb, how long each step took and what each file is.
//! It needs no Nexus: with every Nexus down their steps fail and the rest
//! is still gathered.  The API token is never read into it.
//!
//! What `dns explain` and `dns timeline` decide from is exactly what was
//! gathered (their observations), so `--from-bundle` gives the verdict the
//! live command gave when the bundle was taken, and `explain --at` and
//! `timeline --generation` work from the histories it holds.

use crate::discovery::{Discovery, http_client, note};
use crate::dns::StatusObservations;
use crate::explain::gather::{Observations, Question};
use crate::explain::past::PastObservations;
use crate::format::Output;
use crate::history::{
    Generations, NexusHistoryObservation, ServerHistoryObservation, Window, nexus_history,
    server_history,
};
use crate::timeline::TimelineObservations;
use anyhow::{Context, anyhow, bail};
use chrono::{DateTime, Utc};
use dns_types::apply_history::served_at;
use dns_types::{DnsGroup, DnsVersion};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct BundleArgs {
    /// A name to explain in the bundle (repeatable); `explain NAME
    /// --from-bundle` then answers for it offline.
    #[arg(long = "name", value_name = "NAME")]
    pub names: Vec<String>,
    /// Where to write the archive (default `omdb-bundle-<time>.tar.gz` in
    /// the current directory).
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// What the bundle holds and how it was taken.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub taken_at: DateTime<Utc>,
    pub omdb_version: String,
    /// The DNS server omdb found everything through, if one was given.
    pub dns_server: Option<SocketAddr>,
    pub names: Vec<String>,
    pub steps: Vec<Step>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    /// The file written (or, on failure, `<file>_err.txt`).
    pub file: String,
    /// What it is.
    pub what: String,
    pub took_ms: f64,
    /// Why the step failed, if it did.
    pub error: Option<String>,
}

/// A Nexus's `tasks.json`: who it is and every background task.
#[derive(Serialize)]
struct NexusTasksFile {
    status: nexus_types::NexusStatus,
    tasks: std::collections::HashMap<String, background_task_types::BackgroundTask>,
}

/// What `dns bundle --json` prints.
#[derive(Serialize)]
struct Written {
    path: PathBuf,
    bytes: u64,
    files: usize,
    failed_steps: usize,
    took_ms: f64,
    manifest: Manifest,
}

/// Generations of each group kept (the most recent).
const VERSIONS_KEPT: u32 = 10_000;
/// Server history events kept per server.
const EVENTS_KEPT: u32 = 10_000;
/// Generations of database digests kept (those servers served lately).
const DIGESTS_KEPT: usize = 500;

struct Writer {
    files: BTreeMap<String, Vec<u8>>,
    steps: Vec<Step>,
}

impl Writer {
    fn json<T: Serialize>(
        &mut self,
        file: String,
        what: &str,
        started: Instant,
        value: anyhow::Result<T>,
    ) -> Option<T> {
        let took_ms = started.elapsed().as_secs_f64() * 1000.0;
        match value {
            Ok(value) => {
                let bytes = serde_json::to_vec_pretty(&value).expect("observations serialize");
                self.files.insert(file.clone(), bytes);
                self.steps.push(Step { file, what: what.into(), took_ms, error: None });
                Some(value)
            }
            Err(e) => {
                let error = format!("{e:#}");
                let err_file = format!("{}_err.txt", file.trim_end_matches(".json"));
                self.files.insert(err_file.clone(), format!("{error}\n").into_bytes());
                self.steps.push(Step {
                    file: err_file,
                    what: what.into(),
                    took_ms,
                    error: Some(error),
                });
                None
            }
        }
    }

    fn text(&mut self, file: String, what: &str, started: Instant, value: anyhow::Result<String>) {
        let took_ms = started.elapsed().as_secs_f64() * 1000.0;
        match value {
            Ok(text) => {
                self.files.insert(file.clone(), text.into_bytes());
                self.steps.push(Step { file, what: what.into(), took_ms, error: None });
            }
            Err(e) => {
                let error = format!("{e:#}");
                let err_file = format!("{file}_err.txt");
                self.files.insert(err_file.clone(), format!("{error}\n").into_bytes());
                self.steps.push(Step {
                    file: err_file,
                    what: what.into(),
                    took_ms,
                    error: Some(error),
                });
            }
        }
    }
}

/// A file name for an address (`127.0.0.1_5353`, `fd00__1_5353`).
fn slug(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
        .collect()
}

fn fqdn_key(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

pub async fn run(
    args: &BundleArgs,
    discovery: &Discovery,
    output: &Output,
    dns_server: Option<SocketAddr>,
) -> anyhow::Result<u8> {
    let taken_at = Utc::now();
    let started = Instant::now();
    let mut w = Writer { files: BTreeMap::new(), steps: Vec::new() };

    // The database, through the same gathering `dns status` uses.
    let t = Instant::now();
    let status = crate::dns::gather_status(discovery, &DnsGroup::ALL).await;
    let status: Option<StatusObservations> = w.json(
        "status.json".into(),
        "what `omdb dns status` saw (servers, SOA on the wire, database digests)",
        t,
        status,
    );
    let datastore = discovery.datastore().await.ok();
    for group in DnsGroup::ALL {
        let t = Instant::now();
        let versions = match &datastore {
            Some(d) => {
                d.dns_versions_list(group, Some(VERSIONS_KEPT)).await.map_err(anyhow::Error::from)
            }
            None => Err(anyhow!("the database could not be reached")),
        };
        w.json(
            format!("database/versions-{group}.json"),
            "the group's generations (when, by whom, why), oldest first",
            t,
            versions,
        );
    }

    // Every Nexus: who it is, its tasks, its propagation history.
    let t = Instant::now();
    let urls = discovery.all_nexus_urls().await;
    let urls = w
        .json("nexus/found.json".into(), "the Nexus instances found in DNS", t, urls)
        .unwrap_or_default();
    for url in &urls {
        let dir = format!("nexus/{}", slug(url.trim_start_matches("http://")));
        let t = Instant::now();
        let client = nexus_client::Client::new_with_client(url, http_client());
        let tasks = async {
            let status = client.status_get().send().await?.into_inner();
            let tasks = client.bgtask_list().send().await?.into_inner();
            Ok::<_, nexus_client::Error<nexus_client::types::Error>>(NexusTasksFile {
                status,
                tasks,
            })
        }
        .await
        .map_err(|e| anyhow!("asking Nexus at {url}: {}", dns_types::error_chain(&e)));
        w.json(format!("{dir}/tasks.json"), "its status and every background task", t, tasks);
        for group in DnsGroup::ALL {
            let t = Instant::now();
            let which = Generations { limit: 10_000, ..Default::default() };
            let h = nexus_history(url, group, which).await;
            let h = match &h.error {
                Some(e) => Err(anyhow!("asking Nexus at {url} for its {group} history: {e}")),
                None => Ok(h),
            };
            w.json(
                format!("{dir}/history-{group}.json"),
                "its propagation history of the group",
                t,
                h,
            );
        }
        let t = Instant::now();
        w.text(format!("{dir}/metrics.txt"), "its Prometheus metrics", t, metrics(url).await);
    }

    // Every server: status, history, metrics.
    let mut servers: BTreeMap<SocketAddr, DnsGroup> = BTreeMap::new();
    for g in status.iter().flat_map(|s| &s.groups) {
        for s in &g.servers {
            servers.insert(s.config_address, g.group);
        }
    }
    let mut histories: BTreeMap<DnsGroup, Vec<ServerHistoryObservation>> = BTreeMap::new();
    for (address, group) in &servers {
        let dir = format!("servers/{group}/{}", slug(&address.to_string()));
        let t = Instant::now();
        let windows = [Window { limit: EVENTS_KEPT, ..Default::default() }];
        let h = server_history(*address, &windows).await;
        histories.entry(*group).or_default().push(h.clone());
        let h = match &h.error {
            Some(e) if h.history.is_none() => Err(anyhow!("asking {address}: {e}")),
            _ => Ok(h),
        };
        w.json(format!("{dir}/history.json"), "its status and apply history", t, h);
        let t = Instant::now();
        w.text(
            format!("{dir}/metrics.txt"),
            "its Prometheus metrics",
            t,
            metrics(&format!("http://{address}")).await,
        );
    }

    // The database's digests of the generations servers served lately.
    for group in DnsGroup::ALL {
        let t = Instant::now();
        let mut generations: BTreeSet<u64> = BTreeSet::new();
        for h in histories.get(&group).into_iter().flatten() {
            for e in h.history.iter().flat_map(|h| &h.events) {
                if let Some(g) = e.event.serves().filter(|g| *g > 0) {
                    generations.insert(g);
                }
            }
        }
        let digests = match &datastore {
            Some(d) => {
                let mut digests = BTreeMap::new();
                for g in generations.into_iter().rev().take(DIGESTS_KEPT) {
                    digests.insert(g, crate::observe::database_digest(d, group, g).await);
                }
                Ok(digests)
            }
            None => Err(anyhow!("the database could not be reached")),
        };
        w.json(
            format!("database/digests-{group}.json"),
            "the database's digest of each generation servers served",
            t,
            digests,
        );
    }

    // Each name asked: what `dns explain` saw, and its history.
    for name in &args.names {
        let t = Instant::now();
        let question = crate::explain::ExplainArgs {
            name: name.clone(),
            rtype: None,
            servers: vec![],
            stuck_after: crate::explain::DEFAULT_STUCK_AFTER_SECS,
            at: None,
            from_bundle: None,
        };
        let observed = crate::explain::gather::gather(&question, discovery).await;
        let key =
            fqdn_key(observed.as_ref().map(|o| o.database.fqdn.as_str()).unwrap_or(name.as_str()));
        w.json(format!("explain/{key}.json"), "what `omdb dns explain` saw for the name (database, every Nexus, every server, the wire)", t, observed);
    }

    let manifest = Manifest {
        taken_at,
        omdb_version: env!("CARGO_PKG_VERSION").into(),
        dns_server,
        names: args.names.clone(),
        steps: w.steps.clone(),
    };
    w.files.insert("manifest.json".into(), serde_json::to_vec_pretty(&manifest)?);
    let path = args.output.clone().unwrap_or_else(|| {
        PathBuf::from(format!("omdb-bundle-{}.tar.gz", taken_at.format("%Y%m%dT%H%M%SZ")))
    });
    write_archive(&path, &w.files)?;
    let failed = manifest.steps.iter().filter(|s| s.error.is_some()).count();
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or_default();
    if output.json {
        output.json(&Written {
            path: path.clone(),
            bytes: size,
            files: w.files.len(),
            failed_steps: failed,
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
            manifest: manifest.clone(),
        })?;
    } else {
        outln!(
            "wrote {} ({} files, {size} bytes) in {:.1}s; {} of {} steps failed{}",
            path.display(),
            w.files.len(),
            started.elapsed().as_secs_f64(),
            failed,
            manifest.steps.len(),
            if failed > 0 { " (see their _err.txt files and manifest.json)" } else { "" }
        );
        for step in manifest.steps.iter().filter(|s| s.error.is_some()) {
            note(format!("{}: {}", step.file, step.error.as_deref().unwrap_or_default()));
        }
    }
    Ok(0)
}

async fn metrics(url: &str) -> anyhow::Result<String> {
    let response = http_client().get(format!("{url}/metrics")).send().await?;
    Ok(response.error_for_status()?.text().await?)
}

fn write_archive(path: &Path, files: &BTreeMap<String, Vec<u8>>) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut archive = tar::Builder::new(gz);
    let mtime = Utc::now().timestamp().max(0) as u64;
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime);
        header.set_cksum();
        archive
            .append_data(&mut header, format!("omdb-bundle/{name}"), bytes.as_slice())
            .with_context(|| format!("writing {name} into {}", path.display()))?;
    }
    archive.into_inner()?.finish()?;
    Ok(())
}

/// A bundle read back.
pub struct Bundle {
    pub path: PathBuf,
    files: BTreeMap<String, Vec<u8>>,
    pub manifest: Manifest,
}

impl Bundle {
    pub fn open(path: &Path) -> anyhow::Result<Bundle> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("opening bundle {}", path.display()))?;
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(file));
        let mut files = BTreeMap::new();
        for entry in
            archive.entries().with_context(|| format!("reading bundle {}", path.display()))?
        {
            let mut entry = entry.with_context(|| format!("reading bundle {}", path.display()))?;
            let name = entry.path()?.to_string_lossy().into_owned();
            let name = name.strip_prefix("omdb-bundle/").unwrap_or(&name).to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            files.insert(name, bytes);
        }
        let manifest: Manifest =
            serde_json::from_slice(files.get("manifest.json").with_context(|| {
                format!("{} has no manifest.json: not an omdb bundle", path.display())
            })?)
            .with_context(|| format!("reading {}'s manifest.json", path.display()))?;
        note(format!(
            "answering from the bundle {} taken at {} (not from the live system)",
            path.display(),
            crate::format::timestamp(manifest.taken_at)
        ));
        Ok(Bundle { path: path.into(), files, manifest })
    }

    fn get<T: serde::de::DeserializeOwned>(&self, file: &str) -> anyhow::Result<T> {
        match self.files.get(file) {
            Some(bytes) => serde_json::from_slice(bytes)
                .with_context(|| format!("reading {file} from the bundle")),
            None => {
                let err = format!("{}_err.txt", file.trim_end_matches(".json"));
                match self.files.get(&err) {
                    Some(e) => bail!(
                        "the bundle could not gather {file}: {}",
                        String::from_utf8_lossy(e).trim()
                    ),
                    None => bail!("the bundle has no {file}"),
                }
            }
        }
    }

    fn under(&self, prefix: &str, suffix: &str) -> Vec<&str> {
        self.files
            .keys()
            .filter(|k| k.starts_with(prefix) && k.ends_with(suffix))
            .map(String::as_str)
            .collect()
    }

    /// What `dns explain NAME` saw when the bundle was taken.
    pub fn explain(&self, name: &str) -> anyhow::Result<Observations> {
        let key = fqdn_key(name);
        let file = format!("explain/{key}.json");
        if !self.files.contains_key(&file)
            && !self.files.contains_key(&format!("explain/{key}_err.txt"))
        {
            let asked: Vec<String> = self
                .under("explain/", ".json")
                .iter()
                .map(|f| f.trim_start_matches("explain/").trim_end_matches(".json").to_string())
                .collect();
            bail!(
                "the bundle {} was not taken with --name {name}; it explains: {}",
                self.path.display(),
                if asked.is_empty() { "no names".into() } else { asked.join(", ") }
            );
        }
        self.get(&file)
    }

    fn server_histories(&self, group: DnsGroup) -> Vec<ServerHistoryObservation> {
        self.under(&format!("servers/{group}/"), "/history.json")
            .iter()
            .filter_map(|f| self.get(f).ok())
            .collect()
    }

    fn nexus_histories(&self, group: DnsGroup) -> Result<Vec<NexusHistoryObservation>, String> {
        let found: Vec<String> = self.get("nexus/found.json").map_err(|e| format!("{e:#}"))?;
        Ok(found
            .iter()
            .map(|url| {
                let file = format!(
                    "nexus/{}/history-{group}.json",
                    slug(url.trim_start_matches("http://"))
                );
                self.get::<NexusHistoryObservation>(&file).unwrap_or_else(|e| {
                    NexusHistoryObservation {
                        url: url.clone(),
                        id: None,
                        asked_at: self.manifest.taken_at,
                        history: None,
                        error: Some(format!("{e:#}")),
                    }
                })
            })
            .collect())
    }

    fn versions(&self, group: DnsGroup) -> anyhow::Result<Vec<DnsVersion>> {
        self.get(&format!("database/versions-{group}.json"))
    }

    /// What `dns timeline GROUP --generation N` would have gathered when
    /// the bundle was taken.
    pub fn timeline(
        &self,
        group: DnsGroup,
        generation: Option<u64>,
    ) -> anyhow::Result<TimelineObservations> {
        let versions = self.versions(group)?;
        let latest = versions.last().context("the bundle holds no generation of the group")?;
        let version = match generation {
            None => latest.clone(),
            Some(g) => versions.iter().find(|v| v.generation == g).cloned().with_context(|| {
                format!(
                    "the bundle holds generations {} to {} of the {group} group, not {g}",
                    versions.first().map(|v| v.generation).unwrap_or_default(),
                    latest.generation
                )
            })?,
        };
        let nexus = self.nexus_histories(group).map(|found| {
            found
                .into_iter()
                .map(|mut n| {
                    if let Some(h) = &mut n.history {
                        h.generations.retain(|r| r.generation == version.generation);
                    }
                    n
                })
                .collect()
        });
        Ok(TimelineObservations {
            taken_at: self.manifest.taken_at,
            group,
            latest_generation: latest.generation,
            version,
            nexus,
            servers: self.server_histories(group),
        })
    }

    /// What `dns explain NAME --at TIME` would have gathered when the
    /// bundle was taken.
    pub fn past(&self, question: Question, at: DateTime<Utc>) -> anyhow::Result<PastObservations> {
        let live = self.explain(&question.name)?;
        let db = &live.database;
        let group = db.group;
        let all = self.versions(group)?;
        let current = all.iter().rposition(|v| v.time_created <= at);
        let versions: Vec<DnsVersion> = match current {
            Some(i) => all[i..].to_vec(),
            None if all.first().is_some_and(|v| v.generation == 1) => all.clone(),
            None => bail!(
                "the bundle's generations of the {group} group begin at {}, after {}",
                all.first().map(|v| crate::format::timestamp(v.time_created)).unwrap_or_default(),
                crate::format::timestamp(at)
            ),
        };
        let digests: BTreeMap<u64, Result<String, String>> =
            self.get(&format!("database/digests-{group}.json")).unwrap_or_default();
        let servers = self.server_histories(group);
        let mut wanted = digests.clone();
        wanted.retain(|g, _| {
            versions.first().is_some_and(|v| v.generation == *g)
                || servers.iter().any(|s| {
                    served_at(
                        s.history.as_ref().map(|h| h.events.as_slice()).unwrap_or_default(),
                        at,
                    )
                    .is_some_and(|(served, _)| served == *g)
                })
        });
        Ok(PastObservations {
            taken_at: self.manifest.taken_at,
            at,
            question,
            group,
            zone: db.zone.clone(),
            name: db.name.clone(),
            fqdn: db.fqdn.clone(),
            versions,
            stretches: db.stretches.clone(),
            digests: wanted,
            nexus: self.nexus_histories(group),
            servers,
        })
    }
}
