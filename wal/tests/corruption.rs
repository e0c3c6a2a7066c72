//! Corruption: every single-byte flip and every truncation point of a small
//! multi-segment WAL either recovers a clean prefix (damage at the tail) or fails with
//! an error naming the segment file and byte offset; never a panic, never different
//! data. Plus zeroed ranges, missing segments and appended garbage, in every mode.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use keel_fs::{FileSystem, SimFs};
use keel_raft::Entry;
use keel_wal::{LogError, LogStore, RecoveryMode, Wal, WalOptions, WalScanner};

/// A cleanly closed WAL of several segments, as (file name, bytes) pairs, and the
/// entries it holds.
fn golden() -> (Vec<(String, Vec<u8>)>, Vec<Entry>) {
    let fs = sim(42);
    let wal = open_sim(&fs, small_opts());
    let mut all = Vec::new();
    for i in (1..=60u64).step_by(3) {
        let mut b = batch(ents(i, i + 3, 1, 90));
        b.hard_state = Some(hs(1, i));
        wal.write(&b, true).unwrap();
        all.extend(b.entries);
    }
    assert!(wal.segment_names().len() >= 3);
    wal.close().unwrap();
    let dir = Path::new(DIR);
    let files = fs
        .list_dir(dir)
        .unwrap()
        .into_iter()
        .map(|n| {
            let bytes = fs.file_bytes(&dir.join(&n)).unwrap();
            (n, bytes)
        })
        .collect();
    (files, all)
}

/// A fresh simulated file system holding `files`, durably.
fn restore(files: &[(String, Vec<u8>)]) -> SimFs {
    let fs = sim(7);
    let dir = Path::new(DIR);
    for (name, bytes) in files {
        let f = fs.create(&dir.join(name)).unwrap();
        f.write_at(bytes, 0).unwrap();
        f.sync_data().unwrap();
    }
    fs.sync_dir(dir).unwrap();
    fs
}

/// Where the last valid frame of a segment ends.
fn data_end(name: &str, bytes: &[u8]) -> usize {
    let scan = keel_wal::scan_segment_bytes(keel_wal::SegmentName::parse(name).unwrap(), bytes);
    scan.events
        .iter()
        .filter_map(|e| match e {
            keel_wal::ScanEvent::Record(r) => Some(r.end_offset as usize),
            keel_wal::ScanEvent::Damage(_) => None,
        })
        .max()
        .unwrap()
}

fn path(name: &str) -> PathBuf {
    Path::new(DIR).join(name)
}

fn opts(mode: RecoveryMode) -> WalOptions {
    WalOptions {
        recovery_mode: mode,
        ..small_opts()
    }
}

/// The outcome every damaged log must have: a clean prefix of the original entries,
/// or a corruption error naming a segment file and an offset.
fn check_outcome(result: Result<Wal, LogError>, all: &[Entry], what: &str) -> Option<(u64, Wal)> {
    match result {
        Ok(wal) => {
            let last = wal.last_index();
            assert_eq!(wal.first_index(), 1, "{what}");
            let got = wal.entries(1, last + 1, u64::MAX).unwrap();
            assert_eq!(got[..], all[..last as usize], "{what}: different data");
            Some((last, wal))
        }
        Err(LogError::Corrupt(msg)) => {
            assert!(
                msg.contains(".wal") && (msg.contains("offset") || msg.contains("missing")),
                "{what}: error does not name segment and offset: {msg}"
            );
            None
        }
        Err(e) => panic!("{what}: unexpected error kind {e:?}"),
    }
}

#[test]
fn every_single_byte_flip() {
    let (files, all) = golden();
    let segs: Vec<&(String, Vec<u8>)> = files.iter().filter(|(n, _)| n.ends_with(".wal")).collect();
    let last_seg = segs.last().unwrap().0.clone();
    let mut recovered = 0;
    let mut refused = 0;
    for (name, bytes) in &segs {
        let end = data_end(name, bytes);
        for offset in 0..(end + 16).min(bytes.len()) {
            let fs = restore(&files);
            fs.flip_byte(&path(name), offset as u64, 1 << (offset % 8))
                .unwrap();
            let what = format!("flip {name}@{offset}");
            let r = Wal::open(fs.shared(), DIR, small_opts());
            match check_outcome(r, &all, &what) {
                Some((last, _)) => {
                    recovered += 1;
                    // Only damage in the last segment's tail can be recovered from, and
                    // then the log is shorter (or the flip hit unused space).
                    assert!(*name == last_seg || last == 60, "{what}: recovered");
                }
                None => refused += 1,
            }
        }
    }
    assert!(recovered > 0 && refused > 0);
}

#[test]
fn every_truncation_point_of_the_last_segment_recovers_a_prefix() {
    let (files, all) = golden();
    let last_seg = files
        .iter()
        .rfind(|(n, _)| n.ends_with(".wal"))
        .unwrap()
        .clone();
    let end = data_end(&last_seg.0, &last_seg.1);
    let mut lens = Vec::new();
    for cut in 0..=end {
        let fs = restore(&files);
        fs.mutate_file(&path(&last_seg.0), |b| b.truncate(cut))
            .unwrap();
        let r = Wal::open(fs.shared(), DIR, small_opts());
        let what = format!("truncate at {cut}");
        if cut < 40 {
            // The header itself is gone: that is not a torn tail.
            assert!(check_outcome(r, &all, &what).is_none(), "{what}");
            continue;
        }
        let (last, _) = check_outcome(r, &all, &what).unwrap_or_else(|| panic!("{what} refused"));
        lens.push(last);
    }
    assert!(
        lens.windows(2).all(|w| w[0] <= w[1]),
        "longer file, shorter log"
    );
    assert_eq!(*lens.last().unwrap(), 60);
}

#[test]
fn truncating_an_earlier_segment_is_an_error() {
    let (files, all) = golden();
    let first = files
        .iter()
        .find(|(n, _)| n.ends_with(".wal"))
        .unwrap()
        .clone();
    let end = first.1.iter().rposition(|&b| b != 0).unwrap() + 1;
    for cut in (40..end).step_by(8) {
        let fs = restore(&files);
        fs.mutate_file(&path(&first.0), |b| b.truncate(cut))
            .unwrap();
        let r = Wal::open(fs.shared(), DIR, small_opts());
        let what = format!("truncate first segment at {cut}");
        assert!(check_outcome(r, &all, &what).is_none(), "{what} accepted");
    }
}

#[test]
fn zeroed_range_followed_by_intact_records_is_damage_not_the_end() {
    let (files, all) = golden();
    let last_seg = files
        .iter()
        .rfind(|(n, _)| n.ends_with(".wal"))
        .unwrap()
        .0
        .clone();
    let fs = restore(&files);
    // Zero a 512-byte "sector" right after the header and preamble.
    fs.mutate_file(&path(&last_seg), |b| b[64..576].fill(0))
        .unwrap();
    let err = Wal::open(fs.shared(), DIR, small_opts()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&last_seg) && msg.contains("offset"), "{msg}");
    // The scanner shows the same damage without modifying anything.
    let scanner = WalScanner::new(fs.shared(), DIR);
    let listing = scanner.list().unwrap();
    let scan = scanner.scan(*listing.segments.last().unwrap()).unwrap();
    assert!(!scan.is_clean());
    // TolerateAnyCorruption skips it; the log keeps the intact prefix before the hole
    // and the hole is reported.
    let wal = Wal::open(fs.shared(), DIR, opts(RecoveryMode::TolerateAnyCorruption)).unwrap();
    assert!(!wal.recovery_report().tolerated_damage.is_empty());
    check_outcome(Ok(wal), &all, "tolerate any");
}

#[test]
fn missing_segments() {
    let (files, all) = golden();
    let segs: Vec<String> = files
        .iter()
        .filter(|(n, _)| n.ends_with(".wal"))
        .map(|(n, _)| n.clone())
        .collect();
    // A missing middle segment: the sequence jumps.
    let fs = restore(&files);
    fs.remove_file(&path(&segs[1])).unwrap();
    let msg = Wal::open(fs.shared(), DIR, small_opts())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing"), "{msg}");
    // A missing first segment: its entries are not covered by any compaction.
    let fs = restore(&files);
    fs.remove_file(&path(&segs[0])).unwrap();
    let msg = Wal::open(fs.shared(), DIR, small_opts())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("missing"), "{msg}");
    let wal = Wal::open(fs.shared(), DIR, opts(RecoveryMode::TolerateAnyCorruption)).unwrap();
    assert_eq!(wal.last_index(), 0, "nothing before the hole survives");
    assert!(!wal.recovery_report().lost_entry_ranges.is_empty());
    // A missing last segment cannot be told from a log that ended earlier (as with
    // every WAL): the log is a clean prefix.
    let fs = restore(&files);
    fs.remove_file(&path(segs.last().unwrap())).unwrap();
    let wal = Wal::open(fs.shared(), DIR, small_opts()).unwrap();
    check_outcome(Ok(wal), &all, "missing last");
}

#[test]
fn garbage_appended_after_the_last_record_in_every_mode() {
    let (files, _) = golden();
    let last_seg = files
        .iter()
        .rfind(|(n, _)| n.ends_with(".wal"))
        .unwrap()
        .clone();
    let end = data_end(&last_seg.0, &last_seg.1);
    let garbage: Vec<u8> = (0..100u32).map(|i| (i * 37 + 11) as u8).collect();
    let damaged = |fs: &SimFs| {
        fs.mutate_file(&path(&last_seg.0), |b| {
            b[end..end + garbage.len()].copy_from_slice(&garbage)
        })
        .unwrap();
    };

    let fs = restore(&files);
    damaged(&fs);
    let wal = Wal::open(fs.shared(), DIR, small_opts()).unwrap();
    assert_eq!(wal.last_index(), 60);
    let cut = wal.recovery_report().tail_cut.clone().unwrap();
    assert_eq!(cut.offset, end as u64);
    assert_eq!(fs.file_bytes(&path(&cut.broken_file)).unwrap(), garbage);
    // The cut is durable and the log appendable.
    wal.write(&batch(ents(61, 62, 1, 90)), true).unwrap();
    drop(wal);
    fs.crash();
    let wal = Wal::open(fs.shared(), DIR, small_opts()).unwrap();
    assert_eq!(wal.last_index(), 61);
    assert!(wal.recovery_report().tail_cut.is_none());

    let fs = restore(&files);
    damaged(&fs);
    let err = Wal::open(fs.shared(), DIR, opts(RecoveryMode::AbsoluteConsistency)).unwrap_err();
    assert!(err.to_string().contains(&last_seg.0), "{err}");

    let fs = restore(&files);
    damaged(&fs);
    let wal = Wal::open(fs.shared(), DIR, opts(RecoveryMode::TolerateAnyCorruption)).unwrap();
    assert_eq!(wal.last_index(), 60);
    assert!(wal.recovery_report().tail_cut.is_some());
}

#[test]
fn torn_tail_in_every_mode() {
    let (files, all) = golden();
    let last_seg = files
        .iter()
        .rfind(|(n, _)| n.ends_with(".wal"))
        .unwrap()
        .clone();
    let end = last_seg.1.iter().rposition(|&b| b != 0).unwrap() + 1;
    let torn = |fs: &SimFs| {
        // Zero the last 20 bytes written, as if the final sector never made it.
        fs.mutate_file(&path(&last_seg.0), |b| b[end - 20..end].fill(0))
            .unwrap();
    };
    for mode in [
        RecoveryMode::TolerateTailCorruption,
        RecoveryMode::TolerateAnyCorruption,
    ] {
        let fs = restore(&files);
        torn(&fs);
        let wal = Wal::open(fs.shared(), DIR, opts(mode)).unwrap();
        assert!(wal.last_index() < 60);
        check_outcome(Ok(wal), &all, "torn");
    }
    let fs = restore(&files);
    torn(&fs);
    assert!(Wal::open(fs.shared(), DIR, opts(RecoveryMode::AbsoluteConsistency)).is_err());
    // An intact log opens in every mode.
    for mode in [
        RecoveryMode::TolerateTailCorruption,
        RecoveryMode::AbsoluteConsistency,
        RecoveryMode::TolerateAnyCorruption,
    ] {
        let fs = restore(&files);
        let wal = Wal::open(fs.shared(), DIR, opts(mode)).unwrap();
        assert_eq!(wal.entries(1, 61, u64::MAX).unwrap(), all);
    }
}

#[test]
fn flipped_byte_mid_segment_in_every_mode() {
    let (files, all) = golden();
    let first = files
        .iter()
        .find(|(n, _)| n.ends_with(".wal"))
        .unwrap()
        .0
        .clone();
    for mode in [
        RecoveryMode::TolerateTailCorruption,
        RecoveryMode::AbsoluteConsistency,
    ] {
        let fs = restore(&files);
        fs.flip_byte(&path(&first), 300, 0x10).unwrap();
        let msg = Wal::open(fs.shared(), DIR, opts(mode))
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&first) && msg.contains("offset"),
            "{mode:?}: {msg}"
        );
    }
    let fs = restore(&files);
    fs.flip_byte(&path(&first), 300, 0x10).unwrap();
    let wal = Wal::open(fs.shared(), DIR, opts(RecoveryMode::TolerateAnyCorruption)).unwrap();
    assert!(!wal.recovery_report().tolerated_damage.is_empty());
    check_outcome(Ok(wal), &all, "tolerate any, flip");
}

#[test]
fn scanner_reports_records_and_is_read_only() {
    let (files, _) = golden();
    let fs = restore(&files);
    let before = fs.write_count();
    let scanner = WalScanner::new(fs.shared(), DIR);
    let listing = scanner.list().unwrap();
    assert_eq!(
        listing.segments.len(),
        files.iter().filter(|(n, _)| n.ends_with(".wal")).count()
    );
    let mut entries = 0;
    for name in listing.segments {
        let scan = scanner.scan(name).unwrap();
        assert!(scan.is_clean(), "{name}");
        for ev in scan.events {
            if let keel_wal::ScanEvent::Record(r) = ev {
                if let keel_wal::WalRecord::Entries(es) = r.record {
                    entries += es.len();
                }
            }
        }
    }
    assert_eq!(entries, 60);
    assert!(scanner.verify().unwrap().is_empty());
    fs.flip_byte(&path(&files[0].0), 200, 4).unwrap();
    let found = scanner.verify().unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].file, files[0].0);
    assert_eq!(fs.write_count(), before);
}

#[test]
fn hole_in_the_unsynced_tail_is_a_torn_tail_not_damage() {
    // The kernel may write the pages of an unsynced write in any order, so a crash can
    // leave a hole followed by intact records that were never reported durable. Commit
    // records say how far the segment was synced, which tells this apart from damage
    // to synced data.
    let fs = sim(9);
    let wal = open_sim(&fs, small_opts());
    wal.write(&batch(ents(1, 6, 1, 40)), true).unwrap();
    for i in [6u64, 9, 12] {
        wal.write(&batch(ents(i, i + 3, 1, 40)), false).unwrap();
    }
    let name = wal.segment_names()[0].to_string();
    drop(wal);
    let bytes = fs.file_bytes(&path(&name)).unwrap();
    let scan = keel_wal::scan_segment_bytes(keel_wal::SegmentName::parse(&name).unwrap(), &bytes);
    // The frame holding entries 6..9.
    let hole_at = scan
        .events
        .iter()
        .find_map(|e| match e {
            keel_wal::ScanEvent::Record(r) => match &r.record {
                keel_wal::WalRecord::Entries(es) if es[0].index == 6 => Some(r.offset as usize),
                _ => None,
            },
            keel_wal::ScanEvent::Damage(_) => None,
        })
        .unwrap();
    fs.mutate_file(&path(&name), |b| b[hole_at..hole_at + 64].fill(0))
        .unwrap();
    let wal = open_sim(&fs, small_opts());
    assert_eq!(wal.last_index(), 5);
    let cut = wal.recovery_report().tail_cut.clone().unwrap();
    assert_eq!(cut.offset as usize, hole_at);
    // Strict mode still refuses.
    drop(wal);
    let fs2 = restore(&[(name.clone(), bytes)]);
    fs2.mutate_file(&path(&name), |b| b[hole_at..hole_at + 64].fill(0))
        .unwrap();
    assert!(Wal::open(fs2.shared(), DIR, opts(RecoveryMode::AbsoluteConsistency)).is_err());
}
