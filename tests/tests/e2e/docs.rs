//! The docs run as written.  Every ```console block of `README.md` and
//! `docs/*.md` is a session: each `$ COMMAND` line is run verbatim, in
//! order, in one bash per document (so `source` and `export` carry over),
//! against a fresh `devstack run` whose `HOME` is a temporary directory
//! (so `source ~/.devstack/current/env` finds it), and what it prints
//! (stdout and stderr together) must match the lines under it:
//!
//! - times, durations, ids, ports, digests, paths, pids and activation
//!   numbers are redacted on both sides, and runs of spaces are one space
//!   (table columns widen with the addresses);
//! - consecutive lines starting with a server's loopback address compare
//!   as a set (a table's row order follows port numbers, picked at run
//!   time);
//! - a line `...` stands for any number of lines, and `...` inside a line
//!   for any text (for what races, such as which of two Nexus reached a
//!   server first: the rest of the line is still compared);
//! - `note:` lines (omdb's stderr) are compared only if the sample shows
//!   one;
//! - a sample with an `error:` line is a command that must fail (exit
//!   status not 0); any other must succeed.
//!
//! A block preceded by `<!-- not run: REASON -->` is skipped (starting the
//! stack itself, or output from a scenario another test checks).
//! `DOCS=overwrite cargo test -p tests --test e2e docs` rewrites each
//! sample with what the command printed this time (whole: put back any
//! `...` by hand).

use crate::common::redact;
use crate::devstack::{RunningDevstack, with_home};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Every document whose ```console blocks run.
fn documents() -> Vec<PathBuf> {
    let root = repo_root();
    let mut docs = vec![root.join("README.md")];
    let mut more: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    more.sort();
    docs.extend(more);
    docs
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// One `$ COMMAND` and the lines shown under it.
#[derive(Debug)]
struct Step {
    /// 1-based line of the command in its document.
    line: usize,
    command: String,
    sample: Vec<String>,
}

/// The runnable steps of a document, in order; an error for a block that
/// does not start with a command.
fn steps(doc: &str) -> Result<Vec<Step>, String> {
    let mut steps: Vec<Step> = Vec::new();
    let mut in_block = false;
    let mut skipping = false;
    let mut previous = "";
    for (i, line) in doc.lines().enumerate() {
        let trimmed = line.trim();
        if !in_block {
            if trimmed == "```console" {
                in_block = true;
                skipping = previous.starts_with("<!-- not run:");
                if skipping && previous.trim_start_matches("<!-- not run:").trim() == "-->" {
                    return Err(format!("line {}: `not run` without a reason", i));
                }
                if !skipping && !doc.lines().nth(i + 1).unwrap_or("").starts_with("$ ") {
                    return Err(format!("line {}: a console block must start with `$ `", i + 2));
                }
            } else if !trimmed.is_empty() {
                previous = trimmed;
            }
            continue;
        }
        if trimmed == "```" {
            in_block = false;
            previous = "";
            continue;
        }
        if skipping {
            continue;
        }
        match line.strip_prefix("$ ") {
            Some(command) => {
                steps.push(Step { line: i + 1, command: command.to_string(), sample: Vec::new() })
            }
            None => {
                steps.last_mut().expect("a block starts with a command").sample.push(line.into())
            }
        }
    }
    Ok(steps)
}

/// What one command printed and how it exited.
#[derive(Debug)]
struct Ran {
    output: Vec<String>,
    code: i32,
}

/// Runs `steps` verbatim in one bash, with `home` as `HOME`, from the
/// repository's root; gives up (killing bash) after `limit`.
fn run(steps: &[Step], home: &Path, limit: Duration) -> Vec<Ran> {
    let marker = format!("@@docs-step-{}@@", std::process::id());
    let mut script = String::from("set +e\n");
    for step in steps {
        script
            .push_str(&format!("{{ {}\n}} </dev/null 2>&1\necho \"{marker} $?\"\n", step.command));
    }
    let file = home.join(".docs-session.sh");
    std::fs::write(&file, script).unwrap();
    let mut command = Command::new("bash");
    command
        .arg("--noprofile")
        .arg("--norc")
        .arg(&file)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    with_home(&mut command, home);
    // Its own process group, so that giving up kills what it started too
    // (a hung command would otherwise keep the output pipe open).
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command.spawn().unwrap();
    let pid = child.id();
    let started = Instant::now();
    let watchdog = std::thread::spawn(move || {
        while started.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(200));
            if !Path::new(&format!("/proc/{pid}")).exists() {
                return;
            }
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(-(pid as i32)),
            nix::sys::signal::Signal::SIGKILL,
        );
    });
    let output = child.wait_with_output().unwrap();
    let _ = watchdog.join();
    let text = String::from_utf8_lossy(&output.stdout);
    let mut ran = Vec::new();
    let mut current = Vec::new();
    for line in text.lines() {
        match line.strip_prefix(&marker) {
            Some(code) => ran.push(Ran {
                output: std::mem::take(&mut current),
                code: code.trim().parse().unwrap_or(-1),
            }),
            None => current.push(line.to_string()),
        }
    }
    ran
}

/// Replaces what changes from run to run ([`redact`], and paths, pids and
/// activation numbers), and runs of spaces.
fn normalize(line: &str) -> String {
    let rules = [
        (r"(/var)?/tmp/[^\s:,)']+", "<PATH>"),
        (r"\biter \d+", "iter <N>"),
        (r"\bpid \d+", "pid <PID>"),
        (r"\s+", " "),
    ];
    let mut line = redact(line.trim_end());
    for (pattern, replacement) in rules {
        line = regex::Regex::new(pattern).unwrap().replace_all(&line, replacement).into_owned();
    }
    line
}

/// Normalized lines.
fn comparable(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| normalize(l)).collect()
}

/// A table row or list entry that starts with a loopback address (a
/// server's): runs of them compare as sets.
fn is_row(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with("127.0.0.1:<PORT>") || line.starts_with("config API 127.0.0.1:<PORT>")
}

/// Whether one output line is what the sample line shows, where `...`
/// inside a sample line stands for any text (what differs from run to run
/// in ways redaction cannot know, such as which of two Nexus reached a
/// server first).
fn line_matches(sample: &str, actual: &str) -> bool {
    if !sample.contains("...") || sample.trim() == "..." {
        return sample == actual;
    }
    let pattern: Vec<String> = sample.split("...").map(regex::escape).collect();
    regex::Regex::new(&format!("^{}$", pattern.join(".*"))).unwrap().is_match(actual)
}

/// Whether every sample row matches a different output row.
fn same_rows(sample: &[String], actual: &[String]) -> bool {
    let mut used = vec![false; actual.len()];
    sample.iter().all(|want| {
        let found = (0..actual.len()).find(|&i| !used[i] && line_matches(want, &actual[i]));
        found.map(|i| used[i] = true).is_some()
    })
}

/// Whether `actual` matches `sample`, where a `...` line of the sample
/// stands for any number of lines, and a run of rows naming addresses
/// matches the same number of such rows in any order.
fn matches(sample: &[String], actual: &[String]) -> bool {
    match sample.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first.trim() == "..." => {
            (0..=actual.len()).any(|skip| matches(rest, &actual[skip..]))
        }
        Some((first, _)) if is_row(first) => {
            let n = sample.iter().take_while(|l| is_row(l)).count();
            actual.len() >= n
                && actual[..n].iter().all(|l| is_row(l))
                && !actual.get(n).is_some_and(|l| is_row(l))
                && same_rows(&sample[..n], &actual[..n])
                && matches(&sample[n..], &actual[n..])
        }
        Some((first, rest)) => {
            actual.first().is_some_and(|a| line_matches(first, a)) && matches(rest, &actual[1..])
        }
    }
}

/// How many lines at the head of `sample` some head of `actual` matches:
/// the line after them is the first the output cannot show. (Comparing
/// line by line would point at the wrong line once a `...` has skipped.)
fn shown_head(sample: &[String], actual: &[String]) -> usize {
    (0..=sample.len())
        .rev()
        .find(|&k| {
            let head: Vec<String> =
                sample[..k].iter().cloned().chain(std::iter::once("...".to_string())).collect();
            matches(&head, actual)
        })
        .unwrap_or(0)
}

/// Why `ran` does not show what `step` says, if it does not.
fn mismatch(step: &Step, ran: &Ran) -> Option<String> {
    let shows_notes = step.sample.iter().any(|l| l.starts_with("note:"));
    let output: Vec<String> =
        ran.output.iter().filter(|l| shows_notes || !l.starts_with("note:")).cloned().collect();
    let trim = |lines: &[String]| -> Vec<String> {
        let mut lines = lines.to_vec();
        while lines.last().is_some_and(|l| l.trim().is_empty()) {
            lines.pop();
        }
        lines
    };
    let (sample, output) = (trim(&step.sample), trim(&output));
    let must_fail = sample.iter().any(|l| l.starts_with("error:"));
    if must_fail != (ran.code != 0) {
        return Some(format!(
            "exited with {} but the sample {}:\n{}",
            ran.code,
            if must_fail { "shows an error" } else { "shows no error" },
            ran.output.join("\n")
        ));
    }
    let (want, got) = (comparable(&sample), comparable(&output));
    if matches(&want, &got) {
        return None;
    }
    let matched = shown_head(&want, &got);
    let first = match want.get(matched) {
        Some(line) => format!("sample line {} {line:?} is the first it cannot show", matched + 1),
        None => "the output goes on past the sample's last line".to_string(),
    };
    Some(format!(
        "the output does not match the sample ({first})\n--- sample (normalized)\n{}\n--- output (normalized)\n{}\n--- output\n{}",
        want.join("\n"),
        got.join("\n"),
        ran.output.join("\n")
    ))
}

/// Writes each step's output into `doc` as its sample.
fn overwrite(doc: &str, steps: &[Step], ran: &[Ran]) -> String {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        out.push(lines[i].to_string());
        if let Some(k) = steps.iter().position(|s| s.line == i + 1) {
            if let Some(r) = ran.get(k) {
                // Notes only where the sample showed them already.
                let notes = steps[k].sample.iter().any(|l| l.starts_with("note:"));
                let mut output: Vec<String> = r
                    .output
                    .iter()
                    .filter(|l| notes || !l.starts_with("note:"))
                    .map(|l| l.trim_end().to_string())
                    .collect();
                while output.last().is_some_and(|l| l.is_empty()) {
                    output.pop();
                }
                out.extend(output);
            }
            i += 1 + steps[k].sample.len();
            continue;
        }
        i += 1;
    }
    out.join("\n") + "\n"
}

/// Runs the steps of `doc` (named `name`) against `devstack`; returns every
/// mismatch.
fn check(
    name: &str,
    text: &str,
    devstack: &RunningDevstack,
    overwrite_to: Option<&Path>,
) -> Vec<String> {
    let steps = match steps(text) {
        Ok(steps) => steps,
        Err(e) => return vec![format!("{name}: {e}")],
    };
    let ran = run(&steps, &devstack.home, Duration::from_secs(600));
    if let Some(path) = overwrite_to {
        std::fs::write(path, overwrite(text, &steps, &ran)).unwrap();
        return Vec::new();
    }
    let mut problems = Vec::new();
    for (k, step) in steps.iter().enumerate() {
        let Some(r) = ran.get(k) else {
            problems.push(format!("{name}:{}: `{}` did not finish", step.line, step.command));
            break;
        };
        if let Some(why) = mismatch(step, r) {
            problems.push(format!("{name}:{}: `{}`: {why}", step.line, step.command));
        }
    }
    problems
}

#[test]
fn every_console_block_in_the_docs_runs_as_written() {
    let overwriting = std::env::var("DOCS").is_ok_and(|v| v == "overwrite");
    let mut problems = Vec::new();
    let mut ran_any = false;
    for path in documents() {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.strip_prefix(repo_root()).unwrap().display().to_string();
        match steps(&text) {
            Ok(steps) if steps.is_empty() => continue,
            Ok(_) => {}
            Err(e) => {
                problems.push(format!("{name}: {e}"));
                continue;
            }
        }
        ran_any = true;
        let mut devstack = RunningDevstack::start();
        problems.extend(check(&name, &text, &devstack, overwriting.then_some(path.as_path())));
        devstack.interrupt();
    }
    assert!(ran_any, "no document has a runnable console block");
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// The harness is not a test that cannot fail: a command mistyped, a
/// sample that no longer matches, and a failure shown as success are each
/// caught.
#[test]
fn a_broken_doc_command_fails_the_docs_test() {
    let devstack = RunningDevstack::start();
    let good = "\
```console
$ source ~/.devstack/current/env
$ omdb db dns names external 1
external DNS, generation 1 (created at 2026-12-04T03:42:02.030Z by devstack: \"initial setup\")
  zone example.test (TTL 60s), 1 name:
    NAME  RECORD
    api  A 127.0.0.1
```
";
    assert_eq!(check("good.md", good, &devstack, None), Vec::<String>::new());
    let cases = [
        (good.replace("dns names", "dns nmes"), "exited with 2"),
        (good.replace("api  A 127.0.0.1", "api  A 127.0.0.2"), "does not match"),
        (
            good.replace("$ omdb db dns names external 1", "$ omdb db dns names external 7"),
            "exited with 1",
        ),
    ];
    for (doc, why) in cases {
        let problems = check("broken.md", &doc, &devstack, None);
        assert_eq!(problems.len(), 1, "{doc}\n{problems:?}");
        assert!(problems[0].contains(why), "{}", problems[0]);
    }
    // An unrun block needs a reason; a block that starts with output is refused.
    assert!(steps("<!-- not run: -->\n```console\n$ true\n```\n").is_err());
    assert!(steps("```console\noutput\n```\n").is_err());
    let mut devstack = devstack;
    devstack.interrupt();
}

#[test]
fn samples_match_with_gaps_and_sets() {
    let lines = |s: &str| s.lines().map(String::from).collect::<Vec<_>>();
    let sample = comparable(&lines("a\n...\n  127.0.0.1:1 x\n  127.0.0.1:2 y...\nz"));
    assert!(matches(
        &sample,
        &comparable(&lines("a\nb\nc\n  127.0.0.1:9 yes\n  127.0.0.1:8 x\nz"))
    ));
    assert!(!matches(&sample, &comparable(&lines("a\n  127.0.0.1:9 no\n  127.0.0.1:8 x\nz"))));
    assert!(!matches(&sample, &comparable(&lines("a\n  127.0.0.1:9 y\nz"))));
    assert!(!matches(&sample, &comparable(&lines("a\n  127.0.0.1:1 x\n  127.0.0.1:2 y\nz\nmore"))));
    // A mismatch names the first sample line the output cannot show, past
    // any gap: here the closing `z`, then nothing (the output runs on).
    let sample = lines("a\n...\nc\nz");
    assert_eq!(shown_head(&sample, &lines("a\nb\nc\nd")), 3);
    assert_eq!(shown_head(&sample, &lines("a\nc\nz\nmore")), 4);
    assert_eq!(shown_head(&sample, &lines("b")), 0);
    assert_eq!(
        normalize("ran for 4ms (510ms ago)  at 2026-12-04T03:42:02.030Z"),
        "ran for <DURATION> (<DURATION> ago) at <TIME>"
    );
}
