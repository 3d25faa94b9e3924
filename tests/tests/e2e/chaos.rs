//! The chaos runner, briefly and on loopback: every verdict it checks is
//! right, its last line is the score in the contract's form, the same seed
//! replays the same steps (what `--replay-to` relies on), and it leaves no
//! run directory behind; killed outright, its processes die with it and
//! the next runner removes its run directory.

use std::path::Path;
use std::process::Command;

/// What a history says, without what depends on timing.
fn steps(history: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(history)
        .unwrap()
        .lines()
        .map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            v.as_object_mut().unwrap().remove("time");
            if let Some(details) = v["details"].as_object_mut() {
                details.remove("settled");
            }
            // Ports are picked at run time (the server's name says whose),
            // and a past moment is when an earlier question was asked; that
            // the moment is there (a question `--at`) is kept.
            if let Some(question) = v["details"]["question"].as_object_mut() {
                question.remove("server");
                if let Some(at) = question.get_mut("at") {
                    *at = true.into();
                }
            }
            v
        })
        .collect()
}

/// The runners' run directories in `tmp` (each test gives its runners a
/// temporary directory of their own, `TMPDIR`, so that tests side by side
/// do not see each other's).
fn run_dirs(tmp: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("chaos-"))
        .collect()
}

/// Runs the runner with `args`, its history to `history` and its
/// temporary directories in `tmp`; it must succeed (no wrong verdict).
/// Returns its stdout.
fn replay(chaos: &Path, tmp: &Path, args: &[&str], history: &Path) -> String {
    let output = Command::new(chaos)
        .env("TMPDIR", tmp)
        .args(args)
        .arg("--history")
        .arg(history)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    stdout
}

#[test]
fn the_same_seed_replays_the_same_steps_and_every_verdict_is_right() {
    let chaos = test_support::process::binary("chaos").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let before = run_dirs(tmp.path());
    let run = |name: &str| {
        let history = dir.path().join(name);
        let args = ["--seed", "7", "--duration", "600", "--replay-to", "14", "--hosts", "loopback"];
        (replay(&chaos, tmp.path(), &args, &history), history)
    };
    let (first, first_history) = run("first.jsonl");
    let (_, second_history) = run("second.jsonl");

    let score = regex::Regex::new(
        r"^chaos: seed 7: (\d+) questions, (\d+) right, 0 wrong, (\d+) unknown; \d+ faults; verdicts: healthy=\d+ database=\d+ nexus=\d+ server-list=\d+ propagation=\d+ server=\d+ wire=\d+$",
    )
    .unwrap();
    let last = first.lines().last().unwrap_or_default();
    let counts = score.captures(last).unwrap_or_else(|| panic!("last line: {last:?}\n{first}"));
    let asked: u64 = counts[1].parse().unwrap();
    assert!(asked > 0, "{first}");
    assert_eq!(asked, counts[2].parse::<u64>().unwrap() + counts[3].parse::<u64>().unwrap());

    let (a, b) = (steps(&first_history), steps(&second_history));
    assert!(a.iter().any(|s| s["step"] == 14), "the run stops at step 14: {a:?}");
    assert!(a.iter().all(|s| s["step"].as_u64().unwrap() <= 14));
    assert_eq!(a, b, "the same seed drew other steps");
    // (A killed runner's may have been swept meanwhile.)
    let left: Vec<String> = run_dirs(tmp.path()).difference(&before).cloned().collect();
    assert!(left.is_empty(), "run directories left behind: {left:?}");
}

/// The processes whose command line mentions `text`.
fn processes_mentioning(text: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(text)
                .then(|| format!("{}: {cmdline}", e.file_name().to_string_lossy()))
        })
        .collect()
}

#[test]
fn a_runner_killed_outright_leaves_nothing_behind() {
    let chaos = test_support::process::binary("chaos").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let history = dir.path().join("killed.jsonl");
    let tmp = tempfile::tempdir().unwrap();
    let before = run_dirs(tmp.path());
    let mut runner = Command::new(&chaos)
        .env("TMPDIR", tmp.path())
        .args(["--seed", "7", "--duration", "600", "--hosts", "loopback", "--history"])
        .arg(&history)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Its stack is up once it has made its first changes.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while std::fs::read_to_string(&history).unwrap_or_default().lines().count() < 3 {
        assert!(std::time::Instant::now() < deadline, "the runner made no change in 120 s");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let ours: Vec<String> = run_dirs(tmp.path()).difference(&before).cloned().collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    let run_dir = tmp.path().join(&ours[0]);
    assert!(!processes_mentioning(&ours[0]).is_empty(), "no process of the stack found");
    runner.kill().unwrap();
    runner.wait().unwrap();
    // Its processes die with it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left = processes_mentioning(&ours[0]);
        if left.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "processes outlived the runner: {left:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // Its run directory could not be removed by it; the next runner does.
    assert!(run_dir.exists());
    let output = Command::new(&chaos)
        .env("TMPDIR", tmp.path())
        .args(["--seed", "7", "--duration", "600", "--replay-to", "1", "--hosts", "loopback"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(!run_dir.exists(), "{} was left", run_dir.display());
}

/// Found by the runner (seed 5, replicated database): with the primary
/// killed and no node yet promoted, `omdb dns explain` gave no verdict at
/// all ("database does not allow writes"), though both standbys answered
/// reads.  It now reads the standby furthest along and says that writes
/// cannot commit (`database`), or, asked about an earlier moment, what the
/// histories say (step 52: `--at` a moment before the failover, healthy;
/// steps 52 to 64 are all asked before the failover ends).
#[test]
fn explain_during_a_failover_reads_a_standby_and_gives_a_verdict() {
    let chaos = test_support::process::binary("chaos").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let history = dir.path().join("h5.jsonl");
    let args = ["--seed", "5", "--duration", "600", "--replay-to", "64"];
    let args = [&args[..], &["--db", "replicated", "--hosts", "loopback"]].concat();
    replay(&chaos, tmp.path(), &args, &history);
    let steps = steps(&history);
    let failover = steps
        .iter()
        .position(|s| s["kind"] == "inject" && s["details"]["fault"] == "primary-lost")
        .unwrap_or_else(|| panic!("seed 5 no longer loses its primary by step 52: {steps:#?}"));
    let during: Vec<&serde_json::Value> = steps[failover..]
        .iter()
        .take_while(|s| s["kind"] != "heal")
        .filter(|s| s["kind"] == "ask")
        .collect();
    assert!(during.iter().any(|s| s["step"] == 52), "step 52 is asked during the failover");
    assert!(during.len() >= 5, "{during:#?}");
    for ask in &during {
        assert_eq!(ask["details"]["outcome"], "right", "{ask:#}");
        assert!(!ask["verdict"].is_null(), "no verdict during the failover: {ask:#}");
    }
    // Asked about now, right after the kill (a promotion waits for the old
    // primary's leader key to expire): writes cannot commit.
    assert!(
        during
            .iter()
            .any(|s| s["verdict"] == "database" && s["details"]["question"]["at"].is_null()),
        "{during:#?}"
    );
    assert!(run_dirs(tmp.path()).is_empty());
}
