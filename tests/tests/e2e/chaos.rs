//! The chaos runner, briefly and on loopback: every verdict it checks is
//! right, its last line is the score in the contract's form, the same seed
//! replays the same steps (what `--replay-to` relies on), and it leaves no
//! run directory behind.

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

fn run_dirs() -> usize {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("chaos-"))
        .count()
}

#[test]
fn the_same_seed_replays_the_same_steps_and_every_verdict_is_right() {
    let chaos = test_support::process::binary("chaos").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let before = run_dirs();
    let run = |name: &str| {
        let history = dir.path().join(name);
        let output = Command::new(&chaos)
            .args(["--seed", "7", "--duration", "600", "--replay-to", "14", "--hosts", "loopback"])
            .arg("--history")
            .arg(&history)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        (stdout, history)
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
    assert_eq!(run_dirs(), before, "a run directory was left behind");
}
