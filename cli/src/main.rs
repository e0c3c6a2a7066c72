//! `keel`: the command line of the keel storage engine.
//!
//! This file only parses arguments (clap derive) and dispatches; each command lives in
//! a module named after it. Exit codes are the same for every command:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done; for `verify`, nothing is damaged; for `repair`, the log is clean now |
//! | 1 | damage found (`wal verify`, `snapshot verify`), `wal repair` refused to cut it, or a `demo` check failed |
//! | 2 | the command could not run: bad arguments, no WAL or snapshots at PATH, I/O errors |
//! | 3 | `serve`: the node stopped on a fatal error (after logging the cause) |

mod bench;
mod cluster_cmd;
mod demo;
mod error;
mod output;
mod path;
mod serve;
mod snapshot_cmd;
mod wal_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::{CliError, Status};
use crate::wal_cmd::dump::{DumpOptions, TypeFilter};

/// keel: a Raft-backed storage engine with a pluggable log.
#[derive(Debug, Parser)]
#[command(name = "keel", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect, verify and repair a node's write-ahead log.
    #[command(subcommand)]
    Wal(WalCommand),
    /// List and verify a node's snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Run one node: the engine, its peer transport and the HTTP API.
    Serve(serve::ServeArgs),
    /// Run a local cluster of `keel serve` processes on 127.0.0.1 until Ctrl-C.
    Cluster(cluster_cmd::ClusterArgs),
    /// Measure synced log appends (`wal`) or replicated writes (`cluster`).
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Run a 3-node cluster in this process, crash and restart a follower and then the
    /// leader under load, and check that every acknowledged write survived.
    Demo(DemoArgs),
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Synced appends by N writers, each appending one entry at a time and waiting
    /// until it is durable. `raw` is a pwrite + fdatasync loop on a preallocated file
    /// with the writers serialized by one mutex (no group commit: one sync per entry);
    /// `wal` is keel's WAL (group commit); `rocksdb` is keel's RocksDB log (needs the
    /// `rocksdb` cargo feature).
    Wal(BenchWalArgs),
    /// Puts by N clients for S seconds against a cluster of nodes in this process
    /// (in-process network, real disk, fsync on).
    Cluster(BenchClusterArgs),
}

#[derive(Debug, Args)]
struct BenchWalArgs {
    /// The log(s) to measure; several (comma-separated) take turns at each writer count.
    #[arg(long, value_delimiter = ',', default_value = "wal")]
    backend: Vec<bench::wal::Backend>,
    /// An empty (or new) directory to write in; the log stays in DIR/wal (DIR/raw,
    /// DIR/rocksdb), or DIR/<backend>-w<writers>/<backend> for several runs. Default: a
    /// temporary directory, removed at the end.
    // This comment is also the `--help` text, where `<backend>` reads as meant.
    #[allow(rustdoc::invalid_html_tags)]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Concurrent writers.
    #[arg(long, value_name = "N", default_value_t = 1)]
    writers: usize,
    /// Entries in total (per run), split across the writers.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    entries: u64,
    /// Bytes per entry.
    #[arg(long, value_name = "B", default_value_t = 256)]
    size: usize,
    /// One JSON object a line per run instead of the table.
    #[arg(long)]
    json: bool,
    /// WAL segment size in bytes (default 64 MiB).
    #[arg(long, value_name = "BYTES")]
    segment_size: Option<u64>,
    /// Run every backend at each of these writer counts (comma-separated), e.g.
    /// 1,4,16,64,256.
    #[arg(long, value_name = "WRITERS", value_delimiter = ',')]
    sweep: Vec<usize>,
    /// With --sweep: draw throughput and p99 latency against writers into this SVG file.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Stop each run after S seconds even if fewer than --entries were written (the
    /// output's `entries` says how many were); keeps a sweep's slow points short.
    #[arg(long, value_name = "S")]
    duration: Option<f64>,
}

#[derive(Debug, Args)]
struct BenchClusterArgs {
    /// Nodes in the cluster.
    #[arg(long, value_name = "N", default_value_t = 3)]
    nodes: u64,
    /// Concurrent clients, each waiting for its put before the next.
    #[arg(long, value_name = "N", default_value_t = 16)]
    clients: usize,
    /// Seconds of load (fractions allowed).
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    duration: f64,
    /// Bytes per value.
    #[arg(long, value_name = "B", default_value_t = 256)]
    size: usize,
    /// One JSON object a line per run instead of the table.
    #[arg(long)]
    json: bool,
    /// An empty (or new) directory for the nodes' data. Default: a temporary
    /// directory, removed at the end.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Run a fresh cluster at each of these client counts (comma-separated); implies
    /// --baseline.
    #[arg(long, value_name = "CLIENTS", value_delimiter = ',')]
    sweep: Vec<usize>,
    /// Also measure keel's WAL alone with as many writers for as long, and report the
    /// ratio cluster ÷ WAL.
    #[arg(long)]
    baseline: bool,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// An empty (or new) directory for the nodes' data. Default: a temporary
    /// directory, removed at the end.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// Seconds of workload, in five phases (elections and catch-up add a little).
    #[arg(long, value_name = "S", default_value_t = 15.0)]
    duration: f64,
    /// Concurrent clients.
    #[arg(long, value_name = "N", default_value_t = 8)]
    clients: usize,
    /// Bytes per value (at least 24).
    #[arg(long, value_name = "B", default_value_t = 100)]
    size: usize,
}

#[derive(Debug, Subcommand)]
enum WalCommand {
    /// Print every record in log order: a table, or one JSON object a line with --json.
    /// Reads past damage and reports it; never writes.
    Dump(DumpArgs),
    /// Check every segment header, record CRC and the log's index continuity.
    /// Exit 0 when clean, 1 on damage (including a torn tail).
    Verify(PathArg),
    /// Summarize segments, index range, terms, entry counts and bytes by type,
    /// preallocated space, the hard state and the latest snapshot marker.
    Stat(PathArg),
    /// Cut a torn tail of the last segment, keeping the cut bytes in a `.broken` file.
    /// Refuses (exit 1) damage that is not a torn tail. Stop the node first.
    Repair(PathArg),
}

#[derive(Debug, Subcommand)]
enum SnapshotCommand {
    /// List snapshots: term, index, size, conf state and whether each is valid.
    Ls(PathArg),
    /// Verify every snapshot's chunk CRCs and whole-file checksum. Exit 1 if any is damaged.
    Verify(PathArg),
}

#[derive(Debug, Args)]
struct PathArg {
    /// A node's data directory, or its `wal/` (or `snap/`) directory.
    path: PathBuf,
}

#[derive(Debug, Args)]
struct DumpArgs {
    /// A node's data directory, or its `wal/` directory.
    path: PathBuf,
    /// Show only records at or above this log index (records without an index, such
    /// as hard states and commits, are hidden when a range is given).
    #[arg(long, value_name = "I")]
    from: Option<u64>,
    /// Show only records at or below this log index.
    #[arg(long, value_name = "I")]
    to: Option<u64>,
    /// Show only these record types (comma-separated).
    #[arg(long = "type", value_name = "TYPES", value_delimiter = ',')]
    types: Vec<TypeFilter>,
    /// One JSON object a line per record, then a summary object.
    #[arg(long)]
    json: bool,
}

fn run(cli: Cli) -> Result<Status, CliError> {
    match cli.command {
        Command::Wal(WalCommand::Dump(a)) => wal_cmd::dump::run(&DumpOptions {
            path: a.path,
            from: a.from,
            to: a.to,
            types: a.types,
            json: a.json,
        }),
        Command::Wal(WalCommand::Verify(a)) => wal_cmd::verify::run(&a.path),
        Command::Wal(WalCommand::Stat(a)) => wal_cmd::stat::run(&a.path),
        Command::Wal(WalCommand::Repair(a)) => wal_cmd::repair::run(&a.path),
        Command::Snapshot(SnapshotCommand::Ls(a)) => snapshot_cmd::ls(&a.path),
        Command::Snapshot(SnapshotCommand::Verify(a)) => snapshot_cmd::verify(&a.path),
        Command::Serve(a) => serve::run(a),
        Command::Cluster(a) => cluster_cmd::run(a),
        Command::Bench(BenchCommand::Wal(a)) => bench::wal::run(&bench::wal::WalBenchOptions {
            backends: a.backend,
            dir: a.dir,
            writers: a.writers,
            entries: a.entries,
            size: a.size,
            json: a.json,
            segment_size: a.segment_size,
            sweep: a.sweep,
            svg: a.svg,
            duration_secs: a.duration,
        }),
        Command::Bench(BenchCommand::Cluster(a)) => {
            bench::cluster::run(&bench::cluster::ClusterBenchOptions {
                nodes: a.nodes,
                clients: a.clients,
                duration_secs: a.duration,
                size: a.size,
                json: a.json,
                dir: a.dir,
                sweep: a.sweep,
                baseline: a.baseline,
            })
        }
        Command::Demo(a) => demo::run(&demo::DemoOptions {
            dir: a.dir,
            duration_secs: a.duration,
            clients: a.clients,
            size: a.size,
        }),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(status) => status.exit_code(),
        // A reader that went away (`keel wal dump | head`) is not an error.
        Err(CliError::BrokenPipe) => ExitCode::SUCCESS,
        Err(e) => {
            output::report_error(&e);
            e.exit_code()
        }
    }
}
