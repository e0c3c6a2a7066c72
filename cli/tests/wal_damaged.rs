//! `keel wal` on damaged WALs: a torn tail, garbage appended, a flipped byte in the
//! middle, a zeroed range with intact records after it, a missing segment, garbage
//! segment files. Each command gives its documented exit code and message, reading
//! commands change nothing, and nothing panics.

mod common;

use std::path::{Path, PathBuf};

use common::{
    append, contents, flip_byte, keel_at, make_wal, record_offsets, segments, zero_range, Run,
    PER_BATCH,
};

const BATCHES: u64 = 30;
const LAST: u64 = BATCHES * PER_BATCH;

fn file_name(p: &Path) -> String {
    p.file_name()
        .and_then(|n| n.to_str())
        .expect("file name")
        .to_string()
}

/// A fresh WAL and its directories.
fn fresh() -> (tempfile::TempDir, PathBuf) {
    let data = tempfile::tempdir().expect("tempdir");
    let wal = make_wal(data.path(), BATCHES);
    (data, wal)
}

/// Runs dump, dump --json and stat, which must succeed, read past the damage, report
/// it, and change nothing.
fn readers_report_damage(data: &Path, seg: &str) -> Vec<serde_json::Value> {
    let before = contents(data);
    let table = keel_at(&["wal", "dump"], data);
    assert_eq!(table.code, 0, "{}", table.all());
    assert!(table.stdout.contains("DAMAGE"), "{}", table.stdout);
    assert!(table.stderr.contains("keel wal verify"), "{}", table.stderr);
    let json = keel_at(&["wal", "dump", "--json"], data);
    assert_eq!(json.code, 0, "{}", json.all());
    let rows = json.json_lines();
    let summary = rows.last().expect("summary");
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["complete"], false);
    let damage = summary["damage"].as_array().expect("damage list").clone();
    assert!(
        damage.iter().any(|d| d["segment"] == seg),
        "damage in {seg} expected: {damage:?}"
    );
    let rows_damage: Vec<_> = rows.iter().filter(|r| r["type"] == "damage").collect();
    assert_eq!(rows_damage.len(), damage.len());
    for d in rows_damage {
        assert!(d["reason"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(d.get("resumed_at").is_some());
    }
    let stat = keel_at(&["wal", "stat"], data);
    assert_eq!(stat.code, 0, "{}", stat.all());
    assert!(stat.stdout.contains("damage: "), "{}", stat.stdout);
    assert!(!stat.stdout.contains("damage: none"), "{}", stat.stdout);
    assert_eq!(contents(data), before, "reading commands write nothing");
    rows
}

/// Asserts `run` is verify's (or repair's) report of mid-log damage in `seg`.
fn assert_corrupt(run: &Run, seg: &str) {
    assert_eq!(run.code, 1, "{}", run.all());
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("corrupt: {seg} offset ")))
        .unwrap_or_else(|| panic!("no corrupt line for {seg}:\n{}", run.all()));
    let rest = &line[format!("corrupt: {seg} offset ").len()..];
    let (offset, reason) = rest.split_once(": ").expect("offset: reason");
    assert!(offset.parse::<u64>().is_ok(), "{line}");
    assert!(!reason.is_empty(), "{line}");
}

/// Repair refuses mid-log damage and leaves every byte as it was.
fn repair_refuses(data: &Path, seg: &str) {
    let before = contents(data);
    let run = keel_at(&["wal", "repair"], data);
    assert_corrupt(&run, seg);
    assert!(run.stderr.contains("refusing to repair"), "{}", run.stderr);
    assert_eq!(contents(data), before, "a refused repair writes nothing");
}

/// Cuts into the last record of the last segment: the torn write of a crash.
#[test]
fn torn_tail_is_reported_and_repaired() {
    let (data, wal) = fresh();
    let segs = segments(&wal);
    let last = segs.last().expect("segments");
    let seg = file_name(last);
    let (off, end) = *record_offsets(last).last().expect("records");
    // Half of the last commit record is gone.
    zero_range(last, off + (end - off) / 2, end);

    let verify = keel_at(&["wal", "verify"], data.path());
    assert_eq!(verify.code, 1, "{}", verify.all());
    let line = verify.stdout.lines().next().expect("a line");
    assert!(
        line.starts_with(&format!("torn tail: {seg} offset ")),
        "{line}"
    );
    assert!(
        verify.stderr.contains("keel wal repair"),
        "{}",
        verify.stderr
    );

    readers_report_damage(data.path(), &seg);
    let stat = keel_at(&["wal", "stat"], data.path());
    assert!(
        stat.stdout.contains("a torn tail would be cut"),
        "{}",
        stat.stdout
    );

    let repair = keel_at(&["wal", "repair"], data.path());
    assert_eq!(repair.code, 0, "{}", repair.all());
    assert!(
        repair
            .stdout
            .starts_with(&format!("cut torn tail: {seg} offset ")),
        "{}",
        repair.stdout
    );
    let broken: Vec<_> = std::fs::read_dir(&wal)
        .expect("read dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".broken"))
        .collect();
    assert_eq!(broken.len(), 1, "the cut bytes are kept");
    assert!(broken[0].file_name().to_string_lossy().starts_with(&seg));

    let after = keel_at(&["wal", "verify"], data.path());
    assert_eq!(after.code, 0, "{}", after.all());
    // Only the torn batch is gone.
    let lost = PER_BATCH;
    assert!(
        after
            .stdout
            .contains(&format!("entries 1..{}", LAST - lost)),
        "{}",
        after.stdout
    );
    let again = keel_at(&["wal", "repair"], data.path());
    assert_eq!(again.code, 0);
    assert!(again.stdout.starts_with("clean"), "{}", again.stdout);
}

#[test]
fn garbage_appended_is_a_torn_tail() {
    let (data, wal) = fresh();
    let segs = segments(&wal);
    let last = segs.last().expect("segments");
    let seg = file_name(last);
    append(last, b"\x07\x00\x00\x00garbage after the end of the log");

    let verify = keel_at(&["wal", "verify"], data.path());
    assert_eq!(verify.code, 1, "{}", verify.all());
    assert!(
        verify
            .stdout
            .starts_with(&format!("torn tail: {seg} offset ")),
        "{}",
        verify.stdout
    );
    readers_report_damage(data.path(), &seg);

    let repair = keel_at(&["wal", "repair"], &wal);
    assert_eq!(repair.code, 0, "{}", repair.all());
    let after = keel_at(&["wal", "verify"], &wal);
    assert_eq!(after.code, 0, "{}", after.all());
    assert!(
        after.stdout.contains(&format!("entries 1..{LAST}")),
        "no record lost: {}",
        after.stdout
    );
}

#[test]
fn flipped_byte_in_the_middle_is_corruption() {
    let (data, wal) = fresh();
    let segs = segments(&wal);
    let first = &segs[0];
    let seg = file_name(first);
    let records = record_offsets(first);
    let (off, end) = records[records.len() / 2];
    flip_byte(first, (off + end) / 2);

    let verify = keel_at(&["wal", "verify"], data.path());
    assert_corrupt(&verify, &seg);
    assert!(
        verify.stdout.contains(&format!("offset {off}: ")),
        "{}",
        verify.stdout
    );
    let rows = readers_report_damage(data.path(), &seg);
    // The dump read on past the damaged record.
    let damage = rows
        .iter()
        .find(|r| r["type"] == "damage")
        .expect("damage row");
    assert!(damage["resumed_at"].as_u64().is_some(), "{damage}");
    assert!(
        rows.iter().any(|r| r["index"] == LAST),
        "later entries still dumped"
    );
    repair_refuses(data.path(), &seg);
}

#[test]
fn flipped_byte_early_in_the_last_segment_is_corruption() {
    let (data, wal) = fresh();
    let segs = segments(&wal);
    let last = segs.last().expect("segments");
    let seg = file_name(last);
    let records = record_offsets(last);
    assert!(records.len() > 4, "the last segment holds several batches");
    // Later batches were synced after this record: it is not a torn tail.
    let (off, end) = records[2];
    flip_byte(last, (off + end) / 2);
    assert_corrupt(&keel_at(&["wal", "verify"], data.path()), &seg);
    repair_refuses(data.path(), &seg);
}

#[test]
fn zeroed_range_followed_by_intact_records_is_damage() {
    let (data, wal) = fresh();
    let segs = segments(&wal);
    let last = segs.last().expect("segments");
    let seg = file_name(last);
    let records = record_offsets(last);
    let (off, end) = records[2];
    zero_range(last, off, end);
    let verify = keel_at(&["wal", "verify"], data.path());
    assert_corrupt(&verify, &seg);
    assert!(!verify.stdout.contains("torn tail"), "{}", verify.stdout);
    readers_report_damage(data.path(), &seg);
    repair_refuses(data.path(), &seg);
}

#[test]
fn missing_segment_is_corruption() {
    let (data, wal) = fresh();
    let segs = segments(&wal);
    assert!(segs.len() >= 3);
    std::fs::remove_file(&segs[1]).expect("remove");
    let after_gap = file_name(&segs[2]);
    let verify = keel_at(&["wal", "verify"], data.path());
    assert_corrupt(&verify, &after_gap);
    assert!(verify.stdout.contains("missing"), "{}", verify.stdout);
    readers_report_damage(data.path(), &after_gap);
    repair_refuses(data.path(), &after_gap);
}

#[test]
fn garbage_segment_files_never_panic() {
    let data = tempfile::tempdir().expect("tempdir");
    let wal = data.path().join("wal");
    std::fs::create_dir(&wal).expect("mkdir");
    let mut rng = keel_raft::Rng::new(0x9e37_79b9_7f4a_7c15);
    let garbage: Vec<u8> = (0..20_000).map(|_| rng.next_u64() as u8).collect();
    std::fs::write(wal.join("0000000000000001-0000000000000001.wal"), &garbage).expect("write");
    std::fs::write(wal.join("0000000000000002-0000000000000009.wal"), b"").expect("write");
    std::fs::write(
        wal.join("0000000000000003-0000000000000009.wal"),
        b"KEELWAL\0short",
    )
    .expect("write");
    std::fs::write(wal.join("notes.txt"), b"hello").expect("write");
    let before = contents(data.path());
    let verify = keel_at(&["wal", "verify"], data.path());
    assert_corrupt(&verify, "0000000000000001-0000000000000001.wal");
    assert_corrupt(&verify, "0000000000000002-0000000000000009.wal");
    for cmd in ["dump", "stat"] {
        let run = keel_at(&["wal", cmd], data.path());
        assert_eq!(run.code, 0, "{}", run.all());
    }
    let json = keel_at(&["wal", "dump", "--json"], data.path());
    assert_eq!(
        json.json_lines().last().expect("summary")["complete"],
        false
    );
    let stat = keel_at(&["wal", "stat"], data.path());
    assert!(
        stat.stdout.contains("notes.txt (not part of the WAL)"),
        "{}",
        stat.stdout
    );
    assert_eq!(contents(data.path()), before);
    repair_refuses(data.path(), "0000000000000001-0000000000000001.wal");
}
