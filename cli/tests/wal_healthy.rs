//! `keel wal` on a healthy WAL: every command, through the data directory and the
//! `wal/` directory, and the JSON schema of `dump --json`.

mod common;

use common::{contents, keel_at, make_wal, segments, PER_BATCH};
use serde_json::Value;

const BATCHES: u64 = 30;
const LAST: u64 = BATCHES * PER_BATCH;

#[test]
fn verify_is_clean_through_either_path() {
    let data = tempfile::tempdir().expect("tempdir");
    let wal = make_wal(data.path(), BATCHES);
    assert!(segments(&wal).len() >= 3, "the test wants several segments");
    for path in [data.path(), wal.as_path()] {
        let run = keel_at(&["wal", "verify"], path);
        assert_eq!(run.code, 0, "{}", run.all());
        assert!(run.stdout.starts_with("ok: "), "{}", run.stdout);
        assert!(
            run.stdout.contains(&format!("entries 1..{LAST}")),
            "{}",
            run.stdout
        );
        assert!(run.stderr.is_empty(), "{}", run.stderr);
    }
}

#[test]
fn dump_json_follows_the_interface() {
    let data = tempfile::tempdir().expect("tempdir");
    let wal = make_wal(data.path(), BATCHES);
    let run = keel_at(&["wal", "dump", "--json"], data.path());
    assert_eq!(run.code, 0, "{}", run.all());
    let rows = run.json_lines();
    let (summary, records) = rows.split_last().expect("rows");
    assert_eq!(summary["type"], "summary");
    assert!(summary.get("segment").is_none(), "summary has no segment");
    let seg_names: Vec<String> = segments(&wal)
        .iter()
        .map(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .expect("name")
                .to_string()
        })
        .collect();
    let mut indexes = Vec::new();
    let mut last_pos = (0usize, 0u64);
    for r in records {
        for key in ["segment", "offset", "type", "term", "index", "len"] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
        let seg = r["segment"].as_str().expect("segment is a string");
        let seg_pos = seg_names
            .iter()
            .position(|n| n == seg)
            .expect("a real segment");
        let offset = r["offset"].as_u64().expect("offset");
        assert!((seg_pos, offset) >= last_pos, "rows in log order");
        last_pos = (seg_pos, offset);
        match r["type"].as_str().expect("type") {
            "entry" => {
                assert_eq!(r["entry_type"], "normal");
                let index = r["index"].as_u64().expect("index");
                assert_eq!(
                    r["len"].as_u64(),
                    Some(format!("put key{index}=").len() as u64 + 90)
                );
                let data = r["data"].as_str().expect("data preview");
                assert!(data.starts_with(&format!("put key{index}=")), "{data}");
                assert!(data.len() < 40, "the preview is short: {data}");
                indexes.push(index);
            }
            "state" => {
                assert!(r["term"].as_u64().is_some() && r["commit"].as_u64().is_some());
            }
            "commit" | "snapshot" | "compact" | "truncate" => {}
            other => panic!("unexpected type {other} in a healthy WAL: {r}"),
        }
    }
    assert_eq!(indexes, (1..=LAST).collect::<Vec<_>>());
    assert_eq!(summary["counts"]["normal"], LAST);
    assert_eq!(summary["first_index"], 1);
    assert_eq!(summary["last_index"], LAST);
    assert_eq!(summary["hard_state"]["commit"], LAST);
    assert_eq!(summary["damage"], Value::Array(vec![]));
    assert_eq!(summary["complete"], true);
    assert_eq!(summary["segments"], seg_names.len());
}

#[test]
fn dump_is_deterministic_and_filters() {
    let data = tempfile::tempdir().expect("tempdir");
    make_wal(data.path(), BATCHES);
    let a = keel_at(&["wal", "dump", "--json"], data.path());
    let b = keel_at(&["wal", "dump", "--json"], data.path());
    assert_eq!(a.stdout, b.stdout);

    let ranged = keel_at(
        &["wal", "dump", "--json", "--from", "10", "--to", "12"],
        data.path(),
    );
    assert_eq!(ranged.code, 0, "{}", ranged.all());
    let rows = ranged.json_lines();
    let idx: Vec<u64> = rows[..rows.len() - 1]
        .iter()
        .map(|r| r["index"].as_u64().expect("ranged rows have an index"))
        .collect();
    assert_eq!(idx, vec![10, 11, 12]);

    let states = keel_at(&["wal", "dump", "--json", "--type", "state"], data.path());
    let rows = states.json_lines();
    assert!(rows[..rows.len() - 1].iter().all(|r| r["type"] == "state"));
    assert_eq!(
        rows.last().expect("summary")["counts"]["state"]
            .as_u64()
            .map(|n| n >= BATCHES),
        Some(true)
    );

    let two = keel_at(
        &["wal", "dump", "--json", "--type", "normal,commit"],
        data.path(),
    );
    let rows = two.json_lines();
    assert!(rows[..rows.len() - 1]
        .iter()
        .all(|r| r["type"] == "entry" || r["type"] == "commit"));
}

#[test]
fn dump_table_stat_and_repair_on_a_clean_wal() {
    let data = tempfile::tempdir().expect("tempdir");
    let wal = make_wal(data.path(), BATCHES);
    let before = contents(data.path());

    let table = keel_at(&["wal", "dump"], data.path());
    assert_eq!(table.code, 0, "{}", table.all());
    assert!(table.stdout.starts_with("SEGMENT"), "{}", table.stdout);
    assert!(table.stdout.contains("put key1=vvv"), "{}", table.stdout);
    assert!(table
        .stdout
        .contains(&format!("entries shown: index 1..{LAST}")));
    assert!(table.stdout.contains("damage: none"));

    let stat = keel_at(&["wal", "stat"], &wal);
    assert_eq!(stat.code, 0, "{}", stat.all());
    for want in [
        format!("segments: {}", segments(&wal).len()),
        "preallocated but unused".to_string(),
        format!("entries: {LAST} written, index 1..{LAST}"),
        "terms seen: 1-2".to_string(),
        format!("hard state: term=2 vote=1 commit={LAST}"),
        "latest snapshot marker: none".to_string(),
        format!("on open: entries 1..{LAST}"),
        "damage: none".to_string(),
    ] {
        assert!(
            stat.stdout.contains(&want),
            "missing {want:?} in\n{}",
            stat.stdout
        );
    }
    assert!(stat.stdout.contains("normal") && stat.stdout.contains(&format!("{LAST} entries")));

    // Reading changed nothing.
    assert_eq!(contents(data.path()), before);

    let repair = keel_at(&["wal", "repair"], data.path());
    assert_eq!(repair.code, 0, "{}", repair.all());
    assert!(
        repair.stdout.starts_with("clean: nothing to repair"),
        "{}",
        repair.stdout
    );
    assert_eq!(
        contents(data.path()),
        before,
        "repair of a clean WAL writes nothing"
    );
}

#[test]
fn reading_a_live_wal_with_a_preallocated_file_changes_nothing() {
    use keel_fs::StdFs;
    use keel_raft::{Entry, HardState};
    use keel_wal::{LogBatch, LogStore, Wal, WalOptions};

    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path().join("wal");
    let opts = WalOptions {
        segment_size_bytes: 1 << 20,
        ..WalOptions::default()
    };
    // The log stays open (a running node), with its preallocation thread.
    let live = Wal::open(StdFs::shared(), &dir, opts).expect("open");
    for i in 1..=20u64 {
        let batch = LogBatch {
            entries: vec![Entry::new(1, i, vec![b'a'; 200])],
            hard_state: Some(HardState {
                term: 1,
                vote: 1,
                commit: i,
            }),
            snapshot: None,
        };
        live.write(&batch, true).expect("write");
    }
    std::fs::write(dir.join("bg-00000000000000ff.prealloc"), vec![0u8; 8192]).expect("write");
    // The live log's own preallocation thread may add its spare file at any time.
    let settled = || {
        let mut files = contents(data.path());
        files.retain(|p, _| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.ends_with(".prealloc") || name.starts_with("bg-00000000000000ff")
        });
        files
    };
    let before = settled();
    let verify = keel_at(&["wal", "verify"], data.path());
    assert_eq!(verify.code, 0, "{}", verify.all());
    assert!(verify.stdout.contains("entries 1..20"), "{}", verify.stdout);
    let stat = keel_at(&["wal", "stat"], data.path());
    assert!(
        stat.stdout
            .contains("bg-00000000000000ff.prealloc (preallocated, not yet in use)"),
        "{}",
        stat.stdout
    );
    let dump = keel_at(&["wal", "dump", "--json"], data.path());
    assert_eq!(dump.json_lines().last().expect("summary")["last_index"], 20);
    assert_eq!(settled(), before, "inspection wrote nothing");
    assert_eq!(live.last_index(), 20);
    live.close().expect("close");
}
