//! Hostile input never crashes a node: seeded random scripts through the shared
//! driver (`tests/driver`, also the cargo-fuzz target in `raft-core/fuzz`), and every
//! crash either ever found kept as a named regression test replaying its exact bytes.

mod driver;

use proptest::prelude::*;
use proptest::test_runner::{Config as PropConfig, RngAlgorithm, TestRng, TestRunner};

/// Runs `cases` scripts from a fixed seed. A failure prints the shrunk script as hex;
/// paste it into a regression test below (or replay with `driver::run_with(.., true)`).
fn run_seeded(seed: u8, cases: u32) {
    let config = PropConfig {
        cases,
        failure_persistence: None,
        ..PropConfig::default()
    };
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]);
    let mut runner = TestRunner::new_with_rng(config, rng);
    let result = runner.run(&proptest::collection::vec(any::<u8>(), 0..2000), |bytes| {
        let r = std::panic::catch_unwind(|| driver::run(&bytes));
        if let Err(payload) = r {
            let why = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(TestCaseError::fail(format!(
                "script {} panicked: {why}",
                hex(&bytes)
            )));
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("seed {seed}: {e}");
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Replays one script with a trace of every stepped message.
fn replay(hex_script: &str) {
    driver::run_with(&unhex(hex_script), std::env::var_os("TRACE").is_some());
}

#[test]
fn hostile_scripts_seed_1() {
    run_seeded(1, 2000);
}

#[test]
fn hostile_scripts_seed_2() {
    run_seeded(2, 2000);
}

/// Replays the script in `SCRIPT` (hex, as printed by a failure or from a fuzz
/// artifact with `xxd -p`); `TRACE=1` prints every stepped message.
#[test]
#[ignore = "replay tool: SCRIPT=<hex> cargo test -p keel-raft --test hostile replay_script -- --ignored"]
fn replay_script() {
    replay(&std::env::var("SCRIPT").expect("SCRIPT=<hex>"));
}

// ---- crashes found, replayed byte for byte ----

/// Found by cargo-fuzz: a leader of term 3 appends entry (3, term 3) after (2, term 2),
/// then sends an append that rewrites the log from index 1 with (3, term 3) after
/// (2, term 3). raft-core accepted it; when the first write was reported durable, its
/// (index, term) matched the new entry 3 and the unwritten new entries 1 and 2 were
/// dropped from the unstable log, so committed entries changed under the application.
/// The contradicting append is now refused.
#[test]
fn fuzz_append_contradicting_its_own_term() {
    replay("cd6b0d0200254800e5f9290000580001001f292dc42d2d2d2d005affffff0100800001001f292dc42d2d2d2d0058ffffff00008001000000000000040000000001830000001f2947404747474747476b9eff2a2aff2548002e5d0100000000");
}

/// Found by cargo-fuzz: the driver itself overflowed building an entry after an index
/// near `u64::MAX` (kept so the driver stays total).
#[test]
fn fuzz_driver_entry_index_overflow() {
    replay("4a609898989898989898ffffffffffffffffffffffffff060000a929a929007a29");
}

/// Found by cargo-fuzz (legitimate input, no lie in it): a leader of term 1 hands out
/// entries 2..8 for writing; before they are durable, a leader of term 3 replaces them
/// with (2, 3) of term 2, and a leader of term 7 replaces those with (2, term 1). The
/// old write of (2, term 1) then reports durable: its index and term matched the new
/// entry, raft dropped its unstable tail, and read the stale entries 3..8 that the
/// older writes still put in storage as its own log. Durability reports of Readies
/// handed out before their entries were replaced no longer stabilize anything.
#[test]
fn fuzz_stale_write_after_replaced_entries() {
    replay("ce2d1229d32b17cef23737373752525217ce12ff943737375248ea3a5a8f8fbaffffffffffdfde00000000564ab609040000ffff000000000400020000ff0000ff7a0100ff2a2a2a2a2a2a2a2a872affffffffffffffffffffff5e52521f2d29522552ce521f2d29522552ce2a2a2a2a2a2a5e52521f2d298989898989892a2a2a2a2a2a5effffffffffff5e52521f2d29522552ce521f2d29522552ce2a2a2a2a2a2a5e52521f2d298989898989892a2a2a2a2a2a5e52521f2d298989898989ff3f4589898989898989898989003b13b13b13b13b898989898989898989898989898989898952d8d8d8d8d8d852521f2d298989898989ff3f4589898989898989898989003b13b13b13b13b898989898989898989898989898989898952d8d8d8d8d8d8d8d8d8d8d8f8d8d8ffc9c9d8d8d8d8d8d8c9c92d3ad8");
}
