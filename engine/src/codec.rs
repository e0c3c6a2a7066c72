//! Building blocks for a state machine's [`Command`](crate::state_machine::Command)
//! encoding, the ones keel's own entries use: LEB128 varints and length-prefixed byte
//! strings, read back by a [`Reader`] that checks every read (a truncated input, an
//! overlong varint or a length longer than what is left is an error, never a panic or
//! a large allocation).
//!
//! ```
//! use keel_engine::codec::{put_bytes, put_varint, Reader};
//! use keel_engine::state_machine::{Command, DecodeError};
//!
//! /// Moves `amount` from one account to another.
//! #[derive(Debug, PartialEq)]
//! struct Transfer {
//!     from: String,
//!     to: String,
//!     amount: u64,
//! }
//!
//! impl Command for Transfer {
//!     fn encode(&self, out: &mut Vec<u8>) {
//!         out.push(1); // format version
//!         put_bytes(out, self.from.as_bytes());
//!         put_bytes(out, self.to.as_bytes());
//!         put_varint(out, self.amount);
//!     }
//!
//!     fn decode(bytes: &[u8]) -> Result<Transfer, DecodeError> {
//!         let mut r = Reader::new(bytes);
//!         if r.u8()? != 1 {
//!             return Err("unknown transfer format".into());
//!         }
//!         let transfer = Transfer {
//!             from: String::from_utf8(r.bytes()?)?,
//!             to: String::from_utf8(r.bytes()?)?,
//!             amount: r.varint()?,
//!         };
//!         r.finish()?; // nothing may follow
//!         Ok(transfer)
//!     }
//! }
//!
//! let t = Transfer { from: "ann".into(), to: "bob".into(), amount: 30 };
//! let mut bytes = Vec::new();
//! t.encode(&mut bytes);
//! assert_eq!(Transfer::decode(&bytes).unwrap(), t);
//! assert!(Transfer::decode(&bytes[..bytes.len() - 1]).is_err());
//! ```

pub use keel_raft::codec::{put_bytes, put_varint, DecodeError, Reader};
