//! Tidiness that keeps the code shaped as ARCHITECTURE.md says, checked
//! over the source tree: every file says what it is for (`//!`), task names
//! are spelled in one place, omdb's output is typed (no `json!`-built
//! documents outside tests), and unsafe code is allowed only where it is
//! listed, each with a SAFETY note.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Every `.rs` file of the workspace (and the fuzz targets), relative.
fn rust_files() -> Vec<(String, String)> {
    let root = workspace();
    let mut files = Vec::new();
    let mut todo = vec![root.clone()];
    while let Some(dir) = todo.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.')
                    && name != "target"
                    && name != "corpus"
                    && name != "artifacts"
                {
                    todo.push(path);
                }
            } else if name.ends_with(".rs") {
                let relative = path.strip_prefix(&root).unwrap().display().to_string();
                files.push((relative, std::fs::read_to_string(&path).unwrap()));
            }
        }
    }
    assert!(files.len() > 100, "positive control: found {} files", files.len());
    files
}

#[test]
fn every_file_says_what_it_is_for() {
    let missing: Vec<String> = rust_files()
        .into_iter()
        .filter(|(_, text)| !text.trim_start().starts_with("//!"))
        .map(|(path, _)| path)
        .collect();
    assert!(
        missing.is_empty(),
        "files without a `//!` comment saying what they are for: {missing:?}"
    );
}

#[test]
fn dns_task_names_are_spelled_in_one_place() {
    let spelled: Vec<String> = rust_files()
        .into_iter()
        .filter(|(path, _)| path != "nexus-types/src/task_name.rs")
        .flat_map(|(path, text)| {
            text.lines()
                .enumerate()
                .filter(|(_, line)| {
                    [
                        "format!(\"dns_config_",
                        "format!(\"dns_servers_",
                        "format!(\"dns_propagation_",
                    ]
                    .iter()
                    .any(|built| line.contains(built))
                })
                .map(|(n, _)| format!("{path}:{}", n + 1))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(spelled.is_empty(), "task names built with format! (use DnsTaskName): {spelled:?}");
}

#[test]
fn omdb_output_is_typed() {
    let built: Vec<String> = rust_files()
        .into_iter()
        .filter(|(path, _)| path.starts_with("omdb/src/") && !path.ends_with("/tests.rs"))
        .flat_map(|(path, text)| {
            // Everything after `#[cfg(test)]` is test code.
            let code = text.split("#[cfg(test)]").next().unwrap_or_default().to_string();
            code.lines()
                .enumerate()
                .filter(|(_, line)| line.contains("json!("))
                .map(|(n, _)| format!("{path}:{}", n + 1))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(built.is_empty(), "omdb output built with json! (render a typed report): {built:?}");
}

/// Where unsafe code may be, and why.
const UNSAFE_ALLOWED: &[(&str, &str)] = &[
    ("dns-server/src/udp.rs", "recvmmsg/sendmmsg"),
    ("dns-server/src/state.rs", "malloc_trim"),
    ("dns-server/src/dns.rs", "the zone transfer thread's priority"),
    ("dns-server/benches/cpu/mod.rs", "the do-nothing responder's recvmmsg/sendmmsg; clock ticks"),
    ("http-idle/src/lib.rs", "getsockopt(TCP_INFO)"),
    ("test-support/src/process.rs", "a child's parent-death signal"),
    ("local-postgres/src/lib.rs", "the parent-death signal of PostgreSQL, Patroni and etcd"),
    ("tests/tests/e2e/devstack.rs", "devstack's parent-death signal"),
];

#[test]
fn unsafe_code_only_where_listed_and_explained() {
    let files = rust_files();
    let mut allowed_in = Vec::new();
    for (path, text) in &files {
        if path.starts_with("fuzz/") {
            continue;
        }
        let allows = text.lines().any(|l| {
            let l = l.trim_start();
            l.starts_with("#[allow(unsafe_code)]") || l.starts_with("#![allow(unsafe_code)]")
        });
        if allows {
            allowed_in.push(path.clone());
            assert!(
                UNSAFE_ALLOWED.iter().any(|(p, _)| p == path),
                "{path} allows unsafe code but is not listed in this test"
            );
            let blocks = text.matches("unsafe {").count();
            let notes = text.matches("SAFETY").count();
            assert!(
                notes >= 1 && blocks >= 1,
                "{path}: {blocks} unsafe blocks, {notes} SAFETY notes"
            );
        }
    }
    for (path, why) in UNSAFE_ALLOWED {
        assert!(
            allowed_in.contains(&path.to_string()),
            "{path} ({why}) is listed but allows no unsafe code"
        );
    }
    // The workspace denies it everywhere else.
    let manifest = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    assert!(manifest.contains("unsafe_code = \"deny\""), "the workspace lint is gone");
}
