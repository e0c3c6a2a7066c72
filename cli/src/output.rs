//! Output helpers: a buffered stdout that turns a closed pipe into a quiet exit,
//! stderr reporting that never panics, and the short renderings of log data that
//! the commands share (data previews, conf states, hard states).

use std::fmt::Write as _;
use std::io::{self, BufWriter, Stdout, Write};

use keel_raft::{
    codec, ConfChange, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, EntryType,
    HardState,
};

use crate::error::{CliError, Result};

/// Buffered standard output. Write errors come back as [`CliError`]s (a closed pipe as
/// [`CliError::BrokenPipe`]) instead of panicking as `println!` would.
pub struct Out {
    inner: BufWriter<Stdout>,
}

impl Out {
    /// Standard output, buffered.
    pub fn stdout() -> Out {
        Out {
            inner: BufWriter::new(io::stdout()),
        }
    }

    /// Writes one line.
    pub fn line(&mut self, text: impl AsRef<str>) -> Result<()> {
        self.inner.write_all(text.as_ref().as_bytes())?;
        self.inner.write_all(b"\n")?;
        Ok(())
    }

    /// Writes one JSON value as a line.
    pub fn json(&mut self, value: &impl serde::Serialize) -> Result<()> {
        serde_json::to_writer(&mut self.inner, value).map_err(|e| match e.io_error_kind() {
            Some(kind) => CliError::from(io::Error::from(kind)),
            None => CliError::Output(io::Error::other(e)),
        })?;
        self.inner.write_all(b"\n")?;
        Ok(())
    }

    /// Flushes what is buffered.
    pub fn flush(&mut self) -> Result<()> {
        self.inner.flush()?;
        Ok(())
    }
}

/// Writes a line to stderr; a closed stderr is ignored (there is nowhere left to say it).
pub fn warn(text: impl AsRef<str>) {
    let _ = writeln!(io::stderr(), "{}", text.as_ref());
}

/// Reports a command error on stderr.
pub fn report_error(e: &CliError) {
    warn(format!("keel: error: {e}"));
}

/// Longest text shown by [`preview`], in bytes.
pub const PREVIEW_TEXT_BYTES: usize = 24;
/// Most bytes shown in hex by [`preview`].
pub const PREVIEW_HEX_BYTES: usize = 12;

/// A short, deterministic preview of entry data: printable ASCII as itself (at most
/// [`PREVIEW_TEXT_BYTES`]), anything else as `hex:` and the first
/// [`PREVIEW_HEX_BYTES`] bytes; `...` marks a cut.
pub fn preview(data: &[u8]) -> String {
    let printable = data.iter().all(|&b| (0x20..0x7f).contains(&b));
    if printable {
        let shown = &data[..data.len().min(PREVIEW_TEXT_BYTES)];
        // Printable ASCII is valid UTF-8; the lossy conversion never replaces anything.
        let mut s = String::from_utf8_lossy(shown).into_owned();
        if data.len() > shown.len() {
            s.push_str("...");
        }
        s
    } else {
        let shown = &data[..data.len().min(PREVIEW_HEX_BYTES)];
        let mut s = String::from("hex:");
        for b in shown {
            let _ = write!(s, "{b:02x}");
        }
        if data.len() > shown.len() {
            s.push_str("...");
        }
        s
    }
}

/// Most membership changes listed by [`entry_preview`].
pub const PREVIEW_CHANGES: usize = 4;

/// The preview of an entry's data: membership changes decoded (`add-node 4`,
/// `remove-node 2, add-learner 5 (joint)`, `leave-joint`), anything else (or a change
/// that does not decode) as [`preview`].
pub fn entry_preview(entry_type: EntryType, data: &[u8]) -> String {
    let decoded = match entry_type {
        EntryType::Normal => None,
        EntryType::ConfChange => codec::decode::<ConfChange>(data)
            .ok()
            .map(|cc| change_text(cc.change_type, cc.node_id)),
        EntryType::ConfChangeV2 => codec::decode::<ConfChangeV2>(data).ok().map(|cc| {
            if cc.changes.is_empty() {
                return "leave-joint".to_string();
            }
            let mut s = cc
                .changes
                .iter()
                .take(PREVIEW_CHANGES)
                .map(|c| change_text(c.change_type, c.node_id))
                .collect::<Vec<_>>()
                .join(", ");
            if cc.changes.len() > PREVIEW_CHANGES {
                let _ = write!(s, ", ... ({} changes)", cc.changes.len());
            }
            match cc.transition {
                ConfChangeTransition::Auto => {}
                ConfChangeTransition::JointImplicit => s.push_str(" (joint)"),
                ConfChangeTransition::JointExplicit => s.push_str(" (joint, explicit leave)"),
            }
            s
        }),
    };
    decoded.unwrap_or_else(|| preview(data))
}

fn change_text(t: ConfChangeType, node: u64) -> String {
    let verb = match t {
        ConfChangeType::AddNode => "add-node",
        ConfChangeType::RemoveNode => "remove-node",
        ConfChangeType::AddLearnerNode => "add-learner",
    };
    format!("{verb} {node}")
}

/// `voters=[1,2,3]` plus any learners and joint-configuration members.
pub fn conf_state(c: &ConfState) -> String {
    let list = |v: &[u64]| v.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let mut s = format!("voters=[{}]", list(&c.voters));
    if !c.learners.is_empty() {
        let _ = write!(s, " learners=[{}]", list(&c.learners));
    }
    if !c.voters_outgoing.is_empty() {
        let _ = write!(s, " voters_outgoing=[{}]", list(&c.voters_outgoing));
    }
    if !c.learners_next.is_empty() {
        let _ = write!(s, " learners_next=[{}]", list(&c.learners_next));
    }
    if c.auto_leave {
        s.push_str(" auto_leave");
    }
    s
}

/// `term=3 vote=1 commit=9`.
pub fn hard_state(hs: &HardState) -> String {
    format!("term={} vote={} commit={}", hs.term, hs.vote, hs.commit)
}

/// Compresses sorted numbers into ranges: `1-3,5`.
pub fn ranges(sorted: impl IntoIterator<Item = u64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(u64, u64)> = None;
    for n in sorted {
        run = match run {
            Some((a, b)) if n == b + 1 => Some((a, n)),
            Some((a, b)) => {
                out.push(range_text(a, b));
                Some((n, n))
            }
            None => Some((n, n)),
        };
    }
    if let Some((a, b)) = run {
        out.push(range_text(a, b));
    }
    out.join(",")
}

fn range_text(a: u64, b: u64) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_are_short_and_deterministic() {
        assert_eq!(preview(b""), "");
        assert_eq!(preview(b"put k=v"), "put k=v");
        assert_eq!(
            preview(b"abcdefghijklmnopqrstuvwxyz"),
            "abcdefghijklmnopqrstuvwx..."
        );
        assert_eq!(preview(&[0, 1, 255]), "hex:0001ff");
        assert_eq!(preview(&[7u8; 20]), "hex:070707070707070707070707...");
    }

    #[test]
    fn membership_changes_are_decoded() {
        let cc = ConfChange {
            change_type: ConfChangeType::AddLearnerNode,
            node_id: 4,
            context: Vec::new(),
        };
        assert_eq!(
            entry_preview(EntryType::ConfChange, &codec::encode(&cc)),
            "add-learner 4"
        );
        let v2 = ConfChangeV2::default();
        assert_eq!(
            entry_preview(EntryType::ConfChangeV2, &codec::encode(&v2)),
            "leave-joint"
        );
        assert_eq!(entry_preview(EntryType::ConfChangeV2, &[1, 2]), "hex:0102");
    }

    #[test]
    fn ranges_compress_runs() {
        assert_eq!(ranges([1, 2, 3, 5, 7, 8]), "1-3,5,7-8");
        assert_eq!(ranges([]), "");
    }
}
