//! The typed errors of the `keel` commands and how they map to exit codes.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;

/// How a command that ran to the end turned out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Done, and nothing is damaged (or the command does not judge damage).
    Ok,
    /// The command ran and found damage, or refused to change damaged data.
    Damaged,
}

impl Status {
    /// The process exit code: 0 or 1.
    pub fn exit_code(self) -> ExitCode {
        match self {
            Status::Ok => ExitCode::SUCCESS,
            Status::Damaged => ExitCode::from(1),
        }
    }
}

/// Why a command could not run. Every message is a sentence a person can act on.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// PATH does not exist.
    #[error("{0} does not exist; pass a node's data directory or its wal/ or snap/ directory")]
    NotFound(PathBuf),
    /// PATH is a file.
    #[error("{0} is a file, not a directory; pass the node's data directory or the {1}/ directory that holds it")]
    NotADirectory(PathBuf, &'static str),
    /// PATH holds no WAL.
    #[error("no WAL found in {0}: expected a node's data directory (holding wal/) or a wal/ directory holding *.wal segment files")]
    NoWal(PathBuf),
    /// The WAL directory holds no segments.
    #[error("{0} holds no WAL segment files (*.wal): there is no log to inspect")]
    NoSegments(PathBuf),
    /// PATH holds no snapshot directory.
    #[error("no snapshots found in {0}: expected a node's data directory (holding snap/) or a snap/ directory holding *.snap files")]
    NoSnapshotDir(PathBuf),
    /// A file-system call failed.
    #[error("cannot read {path}: {source}; check the path and its permissions")]
    Io {
        /// What was being read.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The WAL library failed for a reason other than damage.
    #[error("{context}: {source}")]
    Log {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: keel_wal::LogError,
    },
    /// The snapshot library failed for a reason other than damage.
    #[error("{0}")]
    Snapshot(#[from] keel_snapshot::SnapshotError),
    /// The arguments cannot work together (a bench or demo setting out of range).
    #[error("{0}")]
    Usage(String),
    /// A benchmark's load failed while it ran.
    #[error("{context}: {source}")]
    Load {
        /// What was being measured.
        context: String,
        /// The underlying error.
        source: keel_load::LoadError,
    },
    /// The engine failed (opening, closing or driving an in-process node).
    #[error("{context}: {source}")]
    Engine {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: keel_engine::Error,
    },
    /// Writing a file the user asked for (the sweep's SVG chart) failed.
    #[error("cannot write {path}: {reason}")]
    WriteFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(io::Error),
    /// The reader of our output went away; not reported.
    #[error("output closed")]
    BrokenPipe,
    /// `keel serve` or `keel cluster` could not start or stopped with an error; the
    /// message says what to change.
    #[error("{0}")]
    Node(String),
    /// A running `keel serve` node stopped on a fatal error (a thread died, the disk
    /// failed); the message names the cause. Exit code 3: restarting it may help.
    #[error("{0}")]
    NodeFailed(String),
}

impl CliError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: io::Error) -> CliError {
        CliError::Io {
            path: path.into(),
            source,
        }
    }

    /// The process exit code: 3 for a node that stopped on a fatal error while it
    /// ran, 2 for every other error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            CliError::NodeFailed(_) => ExitCode::from(3),
            _ => ExitCode::from(2),
        }
    }
}

impl From<io::Error> for CliError {
    /// Errors writing stdout: a closed pipe ends the command quietly.
    fn from(e: io::Error) -> CliError {
        if e.kind() == io::ErrorKind::BrokenPipe {
            CliError::BrokenPipe
        } else {
            CliError::Output(e)
        }
    }
}

/// Result alias for the commands.
pub type Result<T> = std::result::Result<T, CliError>;
