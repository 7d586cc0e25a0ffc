//! `rewardlens bench`: the table `cargo xtask bench` parses, with and without prompt reuse.

use std::path::Path;
use std::process::Command;

fn bench(extra: &[&str]) -> String {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/models/qwen3-seq");
    let o = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
        .args(["--threads", "1", "bench", "--lengths", "40,48", "--batch", "3", "--shared", "32", "--iters", "1"])
        .args(extra)
        .arg("--model")
        .arg(model)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn prints_one_row_per_length_the_first_score_time_and_peak_memory() {
    for extra in [&[][..], &["--no-prefix-reuse"][..], &["--warmup", "0"][..]] {
        let out = bench(extra);
        for len in [40, 48] {
            let row = out.lines().find(|l| l.starts_with(&format!("| {len} | 3 |"))).unwrap_or_else(|| panic!("{out}"));
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            let (secs, tps): (f64, f64) = (cells[2].parse().unwrap(), cells[3].parse().unwrap());
            // The tiny fixture takes about a millisecond: seconds are printed to 3 decimals.
            assert!(secs >= 0.0 && tps > 0.0 && (secs - (len * 3) as f64 / tps).abs() <= 0.0011, "{row}");
        }
        let first: f64 = out
            .lines()
            .find_map(|l| l.strip_prefix("first score after: "))
            .and_then(|s| s.trim_end_matches('s').parse().ok())
            .unwrap_or_else(|| panic!("{out}"));
        assert!(first > 0.0);
        assert!(out.contains("peak RSS: "), "{out}");
    }
    let err = Command::new(env!("CARGO_BIN_EXE_rewardlens"))
        .args(["bench", "--model", "/nonexistent/model", "--lengths", "8"])
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("/nonexistent/model"));
}
