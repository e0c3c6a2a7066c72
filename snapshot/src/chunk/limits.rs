//! The sizes of the chunk stream: a frame's overhead and the bounds a reader holds every
//! length field to.

/// Default number of state-machine bytes per data chunk (1 MiB).
pub const DEFAULT_CHUNK_SIZE_BYTES: u32 = 1 << 20;
/// Largest chunk size a stream may declare. Bounds what a reader ever allocates for one
/// chunk, whatever a damaged or hostile length field says.
pub const MAX_CHUNK_SIZE_BYTES: u32 = 64 << 20;
/// Largest header payload accepted (the metadata and member addresses are a few
/// hundred bytes in practice; [`crate::info::MAX_MEMBERS`] addresses of
/// [`crate::info::MAX_MEMBER_ADDRESS_BYTES`] each fit with room to spare).
pub const MAX_HEADER_BYTES: u32 = 1 << 20;
/// Bytes in a frame before its payload: kind, seq, payload length.
pub const FRAME_HEAD_BYTES: usize = 1 + 8 + 4;
/// Bytes in a frame besides its payload.
pub const FRAME_OVERHEAD_BYTES: usize = FRAME_HEAD_BYTES + 4;
