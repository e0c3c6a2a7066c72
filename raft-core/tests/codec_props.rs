//! Property tests for the binary codec in `keel_raft::codec`.
//!
//! * Every codec type round-trips through `encode`/`decode` (and through the body-level
//!   `encode_body`/`decode_body` and `encode_into`), with strategies that favour edge
//!   values: zero, `u64::MAX`, varint length boundaries, empty and 127..=129-byte payloads,
//!   every enum variant, nested `Option<Snapshot>` and entry lists.
//! * Decoding is total: arbitrary byte strings, and valid encodings that were truncated,
//!   bit-flipped, extended or had a varint spliced in, decoded as *every* codec type
//!   return `Ok` or `Err`, never panic, and never allocate more than a small multiple of
//!   the input length (checked with a per-thread counting global allocator).
//! * Every strict prefix of a valid encoding is an error, never a shorter value, and any
//!   appended bytes are reported as `TrailingBytes`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Debug;

use keel_raft::codec::{self, Codec, DecodeError, Reader, FORMAT_VERSION};
use keel_raft::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState,
    Entry, EntryType, HardState, Message, MessageType, Snapshot, SnapshotMetadata,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestCaseError;

// ---------------------------------------------------------------------------------------
// Allocation accounting
// ---------------------------------------------------------------------------------------

/// The system allocator, plus a per-thread running total of bytes requested (allocations
/// and the new size of growing reallocations). Requests above [`ALLOC_CEILING`] fail
/// outright so a runaway length prefix aborts the test instead of exhausting memory.
struct CountingAlloc;

/// No decode in this file can legitimately need anywhere near this much.
const ALLOC_CEILING: usize = 1 << 32;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

fn note_alloc(size: usize) {
    // `try_with` so that allocations during thread teardown are simply not counted.
    let _ = ALLOCATED.try_with(|c| c.set(c.get().saturating_add(size)));
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping touches only a
// const-initialised, destructor-free thread local, which never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CEILING {
            return std::ptr::null_mut();
        }
        note_alloc(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CEILING {
            return std::ptr::null_mut();
        }
        note_alloc(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOC_CEILING {
            return std::ptr::null_mut();
        }
        if new_size > layout.size() {
            note_alloc(new_size);
        }
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Runs `f` and returns its result with the number of bytes this thread allocated meanwhile.
fn counting_allocs<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let before = ALLOCATED.with(Cell::get);
    let out = f();
    let after = ALLOCATED.with(Cell::get);
    (out, after - before)
}

/// The most a decode of `input_len` bytes may allocate in total.
///
/// The largest decoded-size-to-encoded-size ratio is a list of minimal entries: 48 bytes
/// of `Entry` per 4 input bytes, and `Vec` growth at most quadruples the cumulative total.
/// A length prefix trusted without checking would blow far past this.
fn alloc_budget(input_len: usize) -> usize {
    64 * input_len + 1024
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

/// u64 values biased towards zero, `u64::MAX` and varint length boundaries.
fn edge_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => Just(0u64),
        1 => Just(u64::MAX),
        1 => Just(u64::MAX - 1),
        1 => Just(1u64 << 63),
        2 => prop::sample::select(vec![
            1u64,
            127,
            128,
            16_383,
            16_384,
            u64::from(u32::MAX),
            (1u64 << 56) - 1,
            1u64 << 56,
            (1u64 << 63) - 1,
        ]),
        3 => 0u64..1_000,
        3 => any::<u64>(),
    ]
}

/// Byte strings, including empty ones and lengths either side of the one-byte varint limit.
fn payload(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => Just(Vec::new()),
        5 => vec(any::<u8>(), 0..=max),
        1 => vec(any::<u8>(), 127..=129),
    ]
}

fn entry_type() -> impl Strategy<Value = EntryType> {
    // Exhaustive on purpose: a new variant must be added here.
    fn _all_listed(t: EntryType) {
        match t {
            EntryType::Normal | EntryType::ConfChange | EntryType::ConfChangeV2 => {}
        }
    }
    prop_oneof![
        Just(EntryType::Normal),
        Just(EntryType::ConfChange),
        Just(EntryType::ConfChangeV2),
    ]
}

fn conf_change_type() -> impl Strategy<Value = ConfChangeType> {
    fn _all_listed(t: ConfChangeType) {
        match t {
            ConfChangeType::AddNode
            | ConfChangeType::RemoveNode
            | ConfChangeType::AddLearnerNode => {}
        }
    }
    prop_oneof![
        Just(ConfChangeType::AddNode),
        Just(ConfChangeType::RemoveNode),
        Just(ConfChangeType::AddLearnerNode),
    ]
}

fn transition() -> impl Strategy<Value = ConfChangeTransition> {
    fn _all_listed(t: ConfChangeTransition) {
        match t {
            ConfChangeTransition::Auto
            | ConfChangeTransition::JointImplicit
            | ConfChangeTransition::JointExplicit => {}
        }
    }
    prop_oneof![
        Just(ConfChangeTransition::Auto),
        Just(ConfChangeTransition::JointImplicit),
        Just(ConfChangeTransition::JointExplicit),
    ]
}

/// Every message type, listed independently of `MessageType::ALL` so a variant missing
/// from the codec's tag table shows up as a round-trip failure rather than being skipped.
const MESSAGE_TYPES: [MessageType; 19] = [
    MessageType::Hup,
    MessageType::Beat,
    MessageType::Propose,
    MessageType::Append,
    MessageType::AppendResponse,
    MessageType::RequestVote,
    MessageType::RequestVoteResponse,
    MessageType::Snapshot,
    MessageType::Heartbeat,
    MessageType::HeartbeatResponse,
    MessageType::Unreachable,
    MessageType::SnapStatus,
    MessageType::CheckQuorum,
    MessageType::TransferLeader,
    MessageType::TimeoutNow,
    MessageType::ReadIndex,
    MessageType::ReadIndexResp,
    MessageType::RequestPreVote,
    MessageType::RequestPreVoteResponse,
];

fn message_type() -> impl Strategy<Value = MessageType> {
    // Exhaustive on purpose: a new variant must be added to MESSAGE_TYPES too.
    fn _all_listed(t: MessageType) {
        use MessageType::*;
        match t {
            Hup
            | Beat
            | Propose
            | Append
            | AppendResponse
            | RequestVote
            | RequestVoteResponse
            | Snapshot
            | Heartbeat
            | HeartbeatResponse
            | Unreachable
            | SnapStatus
            | CheckQuorum
            | TransferLeader
            | TimeoutNow
            | ReadIndex
            | ReadIndexResp
            | RequestPreVote
            | RequestPreVoteResponse => {}
        }
    }
    prop::sample::select(MESSAGE_TYPES.to_vec())
}

fn entry() -> impl Strategy<Value = Entry> {
    (entry_type(), edge_u64(), edge_u64(), payload(64)).prop_map(
        |(entry_type, term, index, data)| Entry {
            term,
            index,
            entry_type,
            data,
        },
    )
}

fn hard_state() -> impl Strategy<Value = HardState> {
    (edge_u64(), edge_u64(), edge_u64()).prop_map(|(term, vote, commit)| HardState {
        term,
        vote,
        commit,
    })
}

fn id_list() -> impl Strategy<Value = Vec<u64>> {
    vec(edge_u64(), 0..6)
}

fn conf_state() -> impl Strategy<Value = ConfState> {
    (id_list(), id_list(), id_list(), id_list(), any::<bool>()).prop_map(
        |(voters, learners, voters_outgoing, learners_next, auto_leave)| ConfState {
            voters,
            learners,
            voters_outgoing,
            learners_next,
            auto_leave,
        },
    )
}

fn conf_change() -> impl Strategy<Value = ConfChange> {
    (conf_change_type(), edge_u64(), payload(32)).prop_map(|(change_type, node_id, context)| {
        ConfChange {
            change_type,
            node_id,
            context,
        }
    })
}

fn conf_change_single() -> impl Strategy<Value = ConfChangeSingle> {
    (conf_change_type(), edge_u64()).prop_map(|(change_type, node_id)| ConfChangeSingle {
        change_type,
        node_id,
    })
}

fn conf_change_v2() -> impl Strategy<Value = ConfChangeV2> {
    (transition(), vec(conf_change_single(), 0..8), payload(32)).prop_map(
        |(transition, changes, context)| ConfChangeV2 {
            transition,
            changes,
            context,
        },
    )
}

fn snapshot_metadata() -> impl Strategy<Value = SnapshotMetadata> {
    (conf_state(), edge_u64(), edge_u64()).prop_map(|(conf_state, index, term)| SnapshotMetadata {
        conf_state,
        index,
        term,
    })
}

fn snapshot() -> impl Strategy<Value = Snapshot> {
    (snapshot_metadata(), payload(64)).prop_map(|(metadata, data)| Snapshot { metadata, data })
}

fn message() -> impl Strategy<Value = Message> {
    let header = (
        message_type(),
        edge_u64(),
        edge_u64(),
        edge_u64(),
        edge_u64(),
        edge_u64(),
    );
    let body = (
        vec(entry(), 0..10),
        edge_u64(),
        prop::option::weighted(0.4, snapshot()),
        any::<bool>(),
        edge_u64(),
        payload(32),
    );
    (header, body).prop_map(
        |(
            (msg_type, to, from, term, log_term, index),
            (entries, commit, snapshot, reject, reject_hint, context),
        )| Message {
            msg_type,
            to,
            from,
            term,
            log_term,
            index,
            entries,
            commit,
            snapshot,
            reject,
            reject_hint,
            context,
        },
    )
}

/// Input bytes biased towards the values that steer a decoder: small tags and bools,
/// continuation bytes, and all-ones.
fn steering_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        4 => any::<u8>(),
        2 => 0u8..4,
        1 => prop::sample::select(vec![0x7f, 0x80, 0x81, 0xff]),
    ]
}

/// Arbitrary inputs; most start with the current format version so decoding gets past
/// the version check and into the body.
fn arbitrary_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => vec(any::<u8>(), 0..64),
        4 => vec(steering_byte(), 0..256).prop_map(|mut v| {
            v.insert(0, FORMAT_VERSION);
            v
        }),
    ]
}

// ---------------------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------------------

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        // Keep the source tree clean: no proptest-regressions/ files.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// `value` survives every encode/decode path unchanged.
fn check_round_trip<T: Codec + PartialEq + Debug>(value: &T) -> Result<(), TestCaseError> {
    let bytes = codec::encode(value);
    prop_assert_eq!(bytes[0], FORMAT_VERSION);
    let decoded = codec::decode::<T>(&bytes);
    prop_assert_eq!(decoded.as_ref(), Ok(value));

    // encode_into appends the same bytes after whatever is already in the buffer.
    let mut buf = vec![0xAA, 0x55];
    codec::encode_into(value, &mut buf);
    prop_assert_eq!(&buf[..2], &[0xAA, 0x55]);
    prop_assert_eq!(&buf[2..], &bytes[..]);

    // The body reads back from a Reader and consumes exactly the body.
    let mut r = Reader::new(&bytes[1..]);
    let body = T::decode_body(&mut r);
    prop_assert_eq!(body.as_ref(), Ok(value));
    prop_assert_eq!(r.remaining(), 0);

    // Encoding is deterministic.
    prop_assert_eq!(codec::encode(value), bytes);
    Ok(())
}

/// Decoding `bytes` as `T` terminates with `Ok` or `Err` (a panic fails the case), stays
/// within the allocation budget, and anything accepted re-encodes either to the input
/// itself or to something strictly shorter, which decodes back to the same value.
fn check_total<T: Codec + PartialEq + Debug>(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (result, allocated) = counting_allocs(|| codec::decode::<T>(bytes));
    prop_assert!(
        allocated <= alloc_budget(bytes.len()),
        "decoding {} bytes as {} allocated {} bytes",
        bytes.len(),
        std::any::type_name::<T>(),
        allocated
    );
    if let Ok(value) = result {
        let canonical = codec::encode(&value);
        // Only an overlong varint can make an accepted input differ from the canonical
        // encoding, and that makes it strictly longer; tags, bools and byte strings map
        // one-to-one.
        prop_assert!(
            canonical == bytes || canonical.len() < bytes.len(),
            "accepted {:?} as {:?}, which encodes as {:?}",
            bytes,
            value,
            canonical
        );
        prop_assert_eq!(codec::decode::<T>(&canonical), Ok(value));
    }
    Ok(())
}

/// [`check_total`] for every codec type.
fn check_total_all(bytes: &[u8]) -> Result<(), TestCaseError> {
    check_total::<Entry>(bytes)?;
    check_total::<HardState>(bytes)?;
    check_total::<ConfState>(bytes)?;
    check_total::<ConfChange>(bytes)?;
    check_total::<ConfChangeSingle>(bytes)?;
    check_total::<ConfChangeV2>(bytes)?;
    check_total::<SnapshotMetadata>(bytes)?;
    check_total::<Snapshot>(bytes)?;
    check_total::<Message>(bytes)?;
    Ok(())
}

/// One bit to flip: a position in the encoding and a bit within that byte.
fn bit_flips() -> impl Strategy<Value = Vec<(Index, u8)>> {
    vec((any::<Index>(), 0u8..8), 1..16)
}

/// Mutations of the valid encoding of `value`:
///
/// * every strict prefix is a `Truncated`/`BadLength` error when read as `T`, and is
///   handled totally when read as any type;
/// * appending a non-empty suffix gives exactly `TrailingBytes(suffix.len())`;
/// * single bit flips, and a varint spliced in anywhere, are handled totally.
fn check_mutations<T: Codec + PartialEq + Debug>(
    value: &T,
    flips: &[(Index, u8)],
    suffix: &[u8],
    splice_at: Index,
    splice: u64,
) -> Result<(), TestCaseError> {
    let bytes = codec::encode(value);

    for len in 0..bytes.len() {
        let prefix = &bytes[..len];
        let result = codec::decode::<T>(prefix);
        prop_assert!(
            matches!(
                result,
                Err(DecodeError::Truncated { .. } | DecodeError::BadLength { .. })
            ),
            "prefix of {} of {} bytes decoded as {:?}",
            len,
            bytes.len(),
            result
        );
        check_total_all(prefix)?;
    }

    if !suffix.is_empty() {
        let mut extended = bytes.clone();
        extended.extend_from_slice(suffix);
        prop_assert_eq!(
            codec::decode::<T>(&extended),
            Err(DecodeError::TrailingBytes(suffix.len()))
        );
        check_total_all(&extended)?;
    }

    for (pos, bit) in flips {
        let mut flipped = bytes.clone();
        flipped[pos.index(bytes.len())] ^= 1 << bit;
        check_total_all(&flipped)?;
    }

    let mut spliced = bytes.clone();
    let mut varint = Vec::new();
    codec::put_varint(&mut varint, splice);
    let at = splice_at.index(bytes.len() + 1);
    spliced.splice(at..at, varint);
    check_total_all(&spliced)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Per-type properties
// ---------------------------------------------------------------------------------------

macro_rules! codec_props {
    ($($name:ident: $ty:ty = $strategy:expr;)*) => {
        $(
            mod $name {
                use super::*;

                proptest! {
                    #![proptest_config(config())]

                    #[test]
                    fn round_trips(value in $strategy) {
                        check_round_trip::<$ty>(&value)?;
                    }
                }

                proptest! {
                    #![proptest_config(ProptestConfig { cases: 512, ..config() })]

                    #[test]
                    fn mutated_encodings_are_handled(
                        value in $strategy,
                        flips in bit_flips(),
                        suffix in vec(any::<u8>(), 0..8),
                        splice_at in any::<Index>(),
                        splice in edge_u64(),
                    ) {
                        check_mutations::<$ty>(&value, &flips, &suffix, splice_at, splice)?;
                    }
                }
            }
        )*
    };
}

codec_props! {
    entry: Entry = entry();
    hard_state: HardState = hard_state();
    conf_state: ConfState = conf_state();
    conf_change: ConfChange = conf_change();
    conf_change_single: ConfChangeSingle = conf_change_single();
    conf_change_v2: ConfChangeV2 = conf_change_v2();
    snapshot_metadata: SnapshotMetadata = snapshot_metadata();
    snapshot: Snapshot = snapshot();
    message: Message = message();
}

// ---------------------------------------------------------------------------------------
// Whole-input properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig { cases: 8192, ..config() })]

    /// Arbitrary bytes decoded as every type: Ok or Err, no panic, bounded allocation.
    #[test]
    fn arbitrary_bytes_decode_totally(bytes in arbitrary_input()) {
        check_total_all(&bytes)?;
    }
}

proptest! {
    #![proptest_config(config())]

    /// A valid encoding under any other version byte is rejected up front.
    #[test]
    fn other_versions_are_rejected(value in message(), version in any::<u8>()) {
        prop_assume!(version != FORMAT_VERSION);
        let mut bytes = codec::encode(&value);
        bytes[0] = version;
        prop_assert_eq!(
            codec::decode::<Message>(&bytes),
            Err(DecodeError::UnsupportedVersion(version))
        );
    }

    /// A message whose entry-count prefix is replaced by an arbitrary (often huge) count
    /// is rejected or decoded without allocating beyond the input.
    #[test]
    fn forged_entry_count_is_bounded(
        value in message(),
        count in edge_u64(),
        tail in vec(steering_byte(), 0..64),
    ) {
        let mut head = Message { entries: Vec::new(), ..value };
        head.snapshot = None;
        let bytes = codec::encode(&head);
        // Version, tag, to, from, term, log_term, index: everything before the count.
        let mut r = Reader::new(&bytes[2..]);
        for _ in 0..5 {
            r.varint().unwrap();
        }
        let count_at = bytes.len() - r.remaining();
        let mut forged = bytes[..count_at].to_vec();
        codec::put_varint(&mut forged, count);
        forged.extend_from_slice(&tail);
        check_total_all(&forged)?;
    }
}

/// A straightforward LEB128 reader over u128: the value and the bytes consumed, or `None`
/// when the input runs out, the varint is longer than 10 bytes, or it exceeds `u64::MAX`.
fn reference_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value: u128 = 0;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        value |= u128::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return u64::try_from(value).ok().map(|v| (v, i + 1));
        }
    }
    None
}

/// Inputs for a lone varint: up to 11 continuation bytes, then any byte (so every
/// length around the 10-byte limit and every final-byte value is reached), then noise.
fn varint_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => vec(steering_byte(), 0..12),
        3 => (vec(0x80u8..=0xff, 0..=11), any::<u8>(), vec(any::<u8>(), 0..2)).prop_map(
            |(mut continued, last, tail)| {
                continued.push(last);
                continued.extend(tail);
                continued
            }
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..config() })]

    /// `Reader::varint` agrees with the u128 reference model on arbitrary input: it never
    /// accepts a 10-byte varint whose high bits would be silently dropped.
    #[test]
    fn varint_matches_reference_model(bytes in varint_input()) {
        let mut r = Reader::new(&bytes);
        match (r.varint(), reference_varint(&bytes)) {
            (Ok(v), Some((expected, used))) => {
                prop_assert_eq!(v, expected);
                prop_assert_eq!(bytes.len() - r.remaining(), used);
            }
            (Err(_), None) => {}
            (got, expected) => {
                prop_assert!(false, "{:?}: decoder {:?}, reference {:?}", bytes, got, expected)
            }
        }
    }

    /// `put_varint` round-trips through the decoder and the reference model, using the
    /// minimal number of bytes.
    #[test]
    fn varint_round_trips(v in edge_u64()) {
        let mut buf = Vec::new();
        codec::put_varint(&mut buf, v);
        let bits = 64 - v.leading_zeros() as usize;
        prop_assert_eq!(buf.len(), bits.div_ceil(7).max(1));
        prop_assert_eq!(reference_varint(&buf), Some((v, buf.len())));
        let mut r = Reader::new(&buf);
        prop_assert_eq!(r.varint(), Ok(v));
        prop_assert_eq!(r.remaining(), 0);
    }

    /// A length prefix is accepted exactly when `len * min_item_bytes` fits in what is
    /// left of the input.
    #[test]
    fn len_prefix_is_bounded_by_input(
        len in edge_u64(),
        min_item_bytes in 0usize..64,
        rest in 0usize..512,
    ) {
        let mut buf = Vec::new();
        codec::put_varint(&mut buf, len);
        buf.resize(buf.len() + rest, 0);
        let result = Reader::new(&buf).len_prefix(min_item_bytes);
        let fits = u128::from(len) * (min_item_bytes.max(1) as u128) <= rest as u128;
        if fits {
            prop_assert_eq!(result, Ok(len as usize));
        } else {
            let is_bad_length = matches!(result, Err(DecodeError::BadLength { .. }));
            prop_assert!(is_bad_length, "{:?}", result);
        }
    }
}

/// The allocation accounting the totality checks rely on actually sees allocations, and
/// a decode that is rejected early stays well inside the budget.
#[test]
fn allocation_counter_works() {
    let (v, allocated) = counting_allocs(|| vec![0u8; 1 << 20]);
    assert!(allocated >= 1 << 20, "counted only {allocated} bytes");
    drop(v);

    // An Entry claiming u64::MAX bytes of data is refused before any allocation.
    let mut forged = vec![FORMAT_VERSION, 0, 1, 1];
    codec::put_varint(&mut forged, u64::MAX);
    let (result, allocated) = counting_allocs(|| codec::decode::<Entry>(&forged));
    assert!(matches!(result, Err(DecodeError::BadLength { .. })));
    assert_eq!(allocated, 0);
}

/// Every variant of every enum round-trips, including each message type carrying a
/// snapshot and the all-zero (smallest encodable) values.
#[test]
fn every_enum_variant_and_default_round_trips() {
    fn rt<T: Codec + PartialEq + Debug>(v: T) {
        assert_eq!(codec::decode::<T>(&codec::encode(&v)), Ok(v));
    }
    for msg_type in MESSAGE_TYPES {
        rt(Message::new(msg_type, 1, 2));
        rt(Message {
            msg_type,
            snapshot: Some(Snapshot::default()),
            entries: vec![Entry::default(); 3],
            ..Message::default()
        });
    }
    for entry_type in [
        EntryType::Normal,
        EntryType::ConfChange,
        EntryType::ConfChangeV2,
    ] {
        rt(Entry {
            entry_type,
            ..Entry::default()
        });
    }
    rt(HardState::default());
    rt(ConfState::default());
    rt(ConfChange::default());
    rt(ConfChangeSingle::default());
    rt(ConfChangeV2::default());
    rt(SnapshotMetadata::default());
    rt(Snapshot::default());
}

/// The per-item minimums the decoder assumes for length checks are exactly the smallest
/// bodies: a list of minimal items that fills the input must still decode.
#[test]
fn minimal_list_items_fill_the_input() {
    // An entry body is at least 4 bytes and a ConfChangeSingle body at least 2.
    assert_eq!(codec::encode(&Entry::default()).len() - 1, 4);
    assert_eq!(codec::encode(&ConfChangeSingle::default()).len() - 1, 2);

    let m = Message {
        entries: vec![Entry::default(); 100],
        ..Message::default()
    };
    assert_eq!(codec::decode::<Message>(&codec::encode(&m)), Ok(m));

    // ConfChangeV2 with an empty context: the list is followed by a single length byte.
    let cc = ConfChangeV2 {
        changes: vec![ConfChangeSingle::default(); 100],
        ..ConfChangeV2::default()
    };
    assert_eq!(codec::decode::<ConfChangeV2>(&codec::encode(&cc)), Ok(cc));

    // A varint list as the last field of a ConfState still needs the auto_leave byte.
    let cs = ConfState {
        learners_next: vec![0; 100],
        ..ConfState::default()
    };
    assert_eq!(codec::decode::<ConfState>(&codec::encode(&cs)), Ok(cs));
}
