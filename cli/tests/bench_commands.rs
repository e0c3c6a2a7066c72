//! `keel bench wal`, `keel bench cluster` and `keel demo`, run as a user would, at
//! tiny sizes: the JSON fields and counts, the directory they leave behind, the
//! refusals of bad arguments, the sweep's chart, and the demo's exit code.

mod common;

use common::keel;
use serde_json::Value;

fn tiny_wal_bench(backend: &str, dir: &std::path::Path) -> Value {
    let dir = dir.to_str().unwrap();
    let run = keel(&[
        "bench",
        "wal",
        "--backend",
        backend,
        "--dir",
        dir,
        "--writers",
        "3",
        "--entries",
        "40",
        "--size",
        "100",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let lines = run.json_lines();
    assert_eq!(lines.len(), 1, "one object: {}", run.stdout);
    lines[0].clone()
}

fn number(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("field {field} missing or not a number in {v}"))
}

#[test]
fn bench_wal_json_has_every_field_and_counts_right() {
    for backend in ["raw", "wal"] {
        let d = tempfile::tempdir().unwrap();
        let v = tiny_wal_bench(backend, d.path());
        assert_eq!(v["backend"], backend);
        assert_eq!(v["writers"], 3);
        assert_eq!(v["entries"], 40);
        assert_eq!(v["size"], 100);
        for field in [
            "seconds",
            "ops_per_sec",
            "mb_per_sec",
            "syncs",
            "entries_per_sync",
            "p50_us",
            "p99_us",
            "p999_us",
            "cpu_percent",
        ] {
            assert!(number(&v, field) >= 0.0, "{field} in {v}");
        }
        assert!(number(&v, "syncs") > 0.0, "{v}");
        assert!(number(&v, "ops_per_sec") > 0.0, "{v}");
        assert!(number(&v, "p50_us") > 0.0, "latencies are measured: {v}");
        assert!(number(&v, "p50_us") <= number(&v, "p99_us"));
        assert!(number(&v, "p99_us") <= number(&v, "p999_us"));
        if backend == "raw" {
            // No group commit: one fdatasync per entry.
            assert_eq!(v["syncs"], 40, "{v}");
        } else {
            assert!(number(&v, "syncs") <= 40.0 + 2.0, "{v}");
        }
    }
}

#[cfg(feature = "rocksdb")]
#[test]
fn bench_wal_rocksdb_backend_counts_its_syncs() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("rocks");
    let v = tiny_wal_bench("rocksdb", &dir);
    assert_eq!(v["backend"], "rocksdb");
    assert_eq!(v["entries"], 40);
    let syncs = number(&v, "syncs");
    assert!(syncs > 0.0 && syncs <= 40.0, "{v}");
    assert!(dir.join("rocksdb").is_dir());
}

#[test]
fn bench_wal_leaves_a_wal_that_verifies() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("bench");
    std::fs::create_dir(&dir).unwrap();
    tiny_wal_bench("wal", &dir);
    assert!(dir.join("wal").is_dir());
    let verify = keel(&["wal", "verify", dir.to_str().unwrap()]);
    assert_eq!(verify.code, 0, "{}", verify.all());
    assert!(verify.stdout.contains("entries 1..40"), "{}", verify.stdout);
    // The raw loop leaves its file in DIR/raw.
    let raw_dir = d.path().join("raw-bench");
    tiny_wal_bench("raw", &raw_dir);
    assert!(raw_dir.join("raw").join("raw.log").is_file());
}

#[test]
fn bench_wal_human_output_is_a_table() {
    let run = keel(&[
        "bench",
        "wal",
        "--entries",
        "20",
        "--writers",
        "2",
        "--size",
        "64",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", run.stdout);
    assert!(lines[0].starts_with("BACKEND") && lines[0].contains("OPS/S"));
    assert!(lines[1].starts_with("wal"), "{}", lines[1]);
}

#[test]
fn bench_wal_duration_caps_a_run() {
    let run = keel(&[
        "bench",
        "wal",
        "--writers",
        "2",
        "--entries",
        "100000000",
        "--duration",
        "0.3",
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let v = &run.json_lines()[0];
    let entries = number(v, "entries");
    assert!(entries > 0.0 && entries < 1e8, "{v}");
    assert!(number(v, "syncs") > 0.0, "{v}");
    assert!(number(v, "seconds") < 30.0, "{v}");
}

#[test]
fn bench_wal_refuses_bad_arguments() {
    let d = tempfile::tempdir().unwrap();
    let full = d.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("something"), b"x").unwrap();
    let missing_parent = d.path().join("no/such/dir");
    let file = d.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--writers", "0"], "writers"),
        (vec!["--writers", "8", "--entries", "4"], "entries"),
        (vec!["--size", "0"], "size"),
        (
            vec!["--dir", missing_parent.to_str().unwrap()],
            "does not exist",
        ),
        (vec!["--dir", full.to_str().unwrap()], "not empty"),
        (vec!["--dir", file.to_str().unwrap()], "is a file"),
        (vec!["--segment-size", "100"], "segment"),
        (vec!["--svg", "x.svg"], "--sweep"),
        (vec!["--sweep", "1,0"], "writers"),
        (vec!["--duration", "0"], "duration"),
    ];
    for (args, says) in cases {
        let mut all = vec!["bench", "wal", "--entries", "10"];
        all.extend(&args);
        let run = keel(&all);
        assert_eq!(run.code, 2, "{args:?}: {}", run.all());
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
    // Nothing was written into the non-empty directory.
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);
    if !cfg!(feature = "rocksdb") {
        let run = keel(&["bench", "wal", "--backend", "rocksdb", "--entries", "10"]);
        assert_eq!(run.code, 2, "{}", run.all());
        assert!(
            run.stderr.contains("rocksdb` cargo feature"),
            "{}",
            run.stderr
        );
    }
}

#[test]
fn bench_wal_sweep_writes_one_line_per_point_and_an_svg() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("sweep");
    let svg = d.path().join("chart.svg");
    let run = keel(&[
        "bench",
        "wal",
        "--sweep",
        "1,4",
        "--backend",
        "raw,wal",
        "--entries",
        "16",
        "--size",
        "64",
        "--dir",
        dir.to_str().unwrap(),
        "--svg",
        svg.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let lines = run.json_lines();
    let points: Vec<(String, u64)> = lines
        .iter()
        .map(|v| {
            (
                v["backend"].as_str().unwrap().to_string(),
                v["writers"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        points,
        [
            ("raw".to_string(), 1),
            ("wal".to_string(), 1),
            ("raw".to_string(), 4),
            ("wal".to_string(), 4)
        ]
    );
    for v in &lines {
        assert_eq!(v["entries"], 16);
    }
    // Each point ran in its own directory.
    for sub in ["raw-w1/raw", "wal-w1/wal", "raw-w4/raw", "wal-w4/wal"] {
        assert!(dir.join(sub).is_dir(), "{sub} missing");
    }
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(200)]);
    assert!(text.trim_end().ends_with("</svg>"));
    assert!(text.contains("writers (log scale)"));
    assert!(text.contains("<polyline"), "a line per backend");
}

#[test]
fn bench_cluster_json_at_a_tiny_duration() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().join("cluster");
    let run = keel(&[
        "bench",
        "cluster",
        "--nodes",
        "3",
        "--clients",
        "4",
        "--duration",
        "1",
        "--size",
        "64",
        "--json",
        "--baseline",
        "--dir",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let lines = run.json_lines();
    assert_eq!(lines.len(), 1, "{}", run.stdout);
    let v = &lines[0];
    assert_eq!(v["clients"], 4);
    assert_eq!(v["nodes"], 3);
    assert_eq!(v["size"], 64);
    assert!(number(v, "entries") > 0.0, "{v}");
    for field in [
        "seconds",
        "ops_per_sec",
        "mb_per_sec",
        "syncs",
        "p50_us",
        "p99_us",
        "p999_us",
        "wal_ops_per_sec",
        "ratio_to_wal",
        "cpu_percent",
    ] {
        assert!(number(v, field) >= 0.0, "{field} in {v}");
    }
    assert!(number(v, "syncs") > 0.0, "{v}");
    // Every node's data stays in DIR/node-<id>, the baseline WAL in DIR/wal-baseline.
    for sub in ["node-1/wal", "node-2/wal", "node-3/wal", "wal-baseline"] {
        assert!(dir.join(sub).is_dir(), "{sub} missing");
    }
    let verify = keel(&["wal", "verify", dir.join("node-1").to_str().unwrap()]);
    assert_eq!(verify.code, 0, "{}", verify.all());
}

#[test]
fn bench_cluster_refuses_bad_arguments() {
    for (args, says) in [
        (vec!["--clients", "0"], "clients"),
        (vec!["--nodes", "0"], "nodes"),
        (vec!["--duration", "0"], "duration"),
        (vec!["--size", "2000000"], "entry limit"),
    ] {
        let mut all = vec!["bench", "cluster"];
        all.extend(&args);
        let run = keel(&all);
        assert_eq!(run.code, 2, "{args:?}: {}", run.all());
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn demo_survives_a_follower_and_a_leader_stopping() {
    let run = keel(&["demo", "--duration", "3", "--clients", "3"]);
    assert_eq!(run.code, 0, "{}", run.all());
    for says in [
        "is the leader",
        "stopping node",
        "(a follower)",
        "(the leader",
        "elected leader",
        "restarted node",
        "recovered",
        "leaders over time",
        "write latency",
        "check passed: every acknowledged write is readable on every node",
    ] {
        assert!(
            run.stdout.contains(says),
            "missing {says:?}: {}",
            run.stdout
        );
    }
}

#[test]
fn demo_refuses_bad_arguments() {
    let run = keel(&["demo", "--clients", "0"]);
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stderr.contains("clients"), "{}", run.stderr);
}
