//! `keel`: the command line of the keel storage engine.
//!
//! This file only parses arguments (clap derive) and dispatches; each command lives in
//! a module named after it. Exit codes are the same for every command:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | done; for `verify`, nothing is damaged; for `repair`, the log is clean now |
//! | 1 | damage found (`wal verify`, `snapshot verify`) or `wal repair` refused to cut it |
//! | 2 | the command could not run: bad arguments, no WAL or snapshots at PATH, I/O errors |

mod cluster_cmd;
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
