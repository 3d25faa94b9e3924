//! The layering rules of ARCHITECTURE.md, checked against the real
//! dependency graph (`cargo metadata`, normal dependencies, transitively),
//! and for the DNS server also what its tests and benchmarks build.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

/// Package name → the names of its normal (non-dev, non-build)
/// dependencies; with `dev`, its dev-dependencies too.
fn graph_of(dev: bool) -> BTreeMap<String, BTreeSet<String>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let names: BTreeMap<&str, &str> = metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    metadata["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            let deps =
                node["deps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|d| {
                        d["dep_kinds"].as_array().unwrap().iter().any(|k| {
                            k["kind"].is_null() || (dev && k["kind"].as_str() == Some("dev"))
                        })
                    })
                    .map(|d| names[d["pkg"].as_str().unwrap()].to_string())
                    .collect();
            (names[node["id"].as_str().unwrap()].to_string(), deps)
        })
        .collect()
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    graph_of(false)
}

fn closure(graph: &BTreeMap<String, BTreeSet<String>>, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(package) = todo.pop() {
        for dep in graph.get(&package).into_iter().flatten() {
            if seen.insert(dep.clone()) {
                todo.push(dep.clone());
            }
        }
    }
    seen
}

/// Every package `package` builds, with the features it asks for alone
/// (`cargo tree -p`): `cargo metadata` unifies features across the
/// workspace, so a server enabling an optional dependency of a shared
/// crate would seem to pull it into every user of that crate.
fn built_by(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["tree", "--locked", "-e", "normal", "--prefix", "none", "--format", "{p}", "-p"])
        .arg(package)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != package)
        .map(str::to_string)
        .collect()
}

#[test]
fn layering_rules_hold() {
    let graph = graph();
    // Positive controls: if reading the graph broke, these fail first.
    for (package, needed) in
        [("nexus", "db-model"), ("nexus", "hickory-proto"), ("omdb", "nexus-client")]
    {
        assert!(closure(&graph, package).contains(needed), "{package} should depend on {needed}");
    }
    let rules: &[(&str, &[&str], &str)] = &[
        (
            "dns-server",
            &["nexus", "db-model", "tokio-postgres", "background-tasks"],
            "it must answer from its own storage while everything else is down",
        ),
        (
            "background-tasks",
            &[
                "dns-types",
                "db-model",
                "tokio-postgres",
                "hickory-proto",
                "nexus-api",
                "nexus-types",
            ],
            "it knows nothing of DNS, SQL or Nexus",
        ),
        (
            "dns-types",
            &["tokio", "tokio-postgres", "hickory-proto", "dropshot", "reqwest"],
            "it is plain data",
        ),
        (
            "dns-server-api",
            &["hickory-proto", "hickory-server", "tokio-postgres", "db-model"],
            "API crates pull in no server or database code",
        ),
        (
            "nexus-api",
            &["hickory-proto", "hickory-server", "tokio-postgres", "db-model", "background-tasks"],
            "API crates pull in no server or database code (task status is plain wire types)",
        ),
        (
            "omdb",
            &[
                "nexus",
                "dns-server",
                "hickory-server",
                "background-tasks",
                "nexus-api",
                "dns-server-api",
                "dropshot",
            ],
            "omdb uses clients, wire types and read-only queries, never server internals \
             nor the server framework",
        ),
        (
            "nexus-types",
            &[
                "tokio",
                "dropshot",
                "reqwest",
                "tokio-postgres",
                "hickory-proto",
                "background-tasks",
            ],
            "wire types are plain data",
        ),
        (
            "background-task-types",
            &["tokio", "background-tasks", "dropshot"],
            "wire types are plain data",
        ),
        (
            "nexus",
            &["hickory-server", "dns-server"],
            "Nexus talks to DNS servers only over their API and DNS",
        ),
        ("local-postgres", &["db-model", "tokio-postgres"], "it only runs a server"),
        (
            "event-log",
            &["tokio", "dns-types", "nexus-types", "dropshot", "tokio-postgres"],
            "it keeps events of any type and knows none",
        ),
    ];
    for (package, forbidden, why) in rules {
        let deps = built_by(package);
        assert!(graph.contains_key(*package), "no package {package}");
        assert!(!deps.is_empty(), "positive control: {package} builds something");
        for f in *forbidden {
            assert!(!deps.contains(*f), "{package} depends on {f}, but {why}");
        }
    }
    // The DNS library stays behind two walls: the server and the resolver.
    for (package, _) in graph.iter().filter(|(p, _)| !p.starts_with("hickory")) {
        let direct = &graph[package];
        if direct.contains("hickory-proto") || direct.contains("hickory-server") {
            assert!(
                ["dns-server", "internal-dns"].contains(&package.as_str()),
                "{package} uses hickory directly; only dns-server and internal-dns may"
            );
        }
    }
}

/// The DNS server's own tests and benchmarks build without the database,
/// Nexus or devstack: they need only the server and the test helpers.
#[test]
fn dns_server_tests_build_without_database_or_nexus() {
    let normal = graph();
    let with_dev = graph_of(true);
    let direct = &with_dev["dns-server"];
    assert!(direct.contains("test-support"), "positive control: {direct:?}");
    let mut built = BTreeSet::new();
    for dep in direct {
        built.insert(dep.clone());
        built.extend(closure(&normal, dep));
    }
    for forbidden in ["devstack", "nexus", "db-model", "tokio-postgres", "local-postgres"] {
        assert!(
            !built.contains(forbidden),
            "dns-server's tests build {forbidden}; they must stand on test-support alone"
        );
    }
}
