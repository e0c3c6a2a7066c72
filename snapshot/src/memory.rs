//! Snapshot bytes of a map from byte keys to byte values: the record layout both of the
//! engine's state machines write and read, and [`Map`], a `BTreeMap` that implements the
//! snapshot traits with it (for tests, benchmarks and examples; the engine's memory
//! state machine keeps a hash map and sorts its keys when it writes a snapshot).
//!
//! Layout, inside the chunk stream's data bytes:
//!
//! ```text
//! magic "KMAP" | version u8 | record count u64 LE |
//! { key_len u32 LE | key | value_len u32 LE | value } * count
//! ```
//!
//! The count comes first because a map knows its length; keys must be strictly
//! increasing, which both rebuilds the map in order and catches duplicated records.
//!
//! The engine's RocksDB state machine writes and reads the same layout one record at a
//! time ([`RecordWriter`], [`RecordReader`]), so a snapshot of either state machine
//! restores into the other.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use crate::state_machine::{SnapshotConsumer, SnapshotProducer};

/// A map in key order: what [`MapConsumer`] rebuilds and [`write_map`] writes. (The
/// engine's memory state machine is a hash map; it restores through this type.)
pub type Map = BTreeMap<Vec<u8>, Vec<u8>>;

const MAGIC: &[u8; 4] = b"KMAP";
const VERSION: u8 = 1;

/// Bounds a reader enforces so a damaged image cannot make it allocate without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapLimits {
    /// Largest key accepted.
    pub max_key_bytes: u32,
    /// Largest value accepted.
    pub max_value_bytes: u32,
}

impl Default for MapLimits {
    /// 64 KiB keys and 64 MiB values: well above the HTTP API's 4 KiB / 1 MiB defaults.
    fn default() -> Self {
        MapLimits {
            max_key_bytes: 64 << 10,
            max_value_bytes: 64 << 20,
        }
    }
}

/// Writes `map` into `out` in the layout above, one record at a time.
pub fn write_map(map: &Map, out: &mut dyn Write) -> io::Result<()> {
    write_records(map.len() as u64, map.iter(), out)
}

/// Writes `count` records from `records` (which must yield exactly `count` pairs in
/// strictly increasing key order), for state machines that keep their map behind
/// something other than a plain `BTreeMap`.
pub fn write_records<I, B>(count: u64, records: I, out: &mut dyn Write) -> io::Result<()>
where
    I: IntoIterator<Item = (B, B)>,
    B: AsRef<[u8]>,
{
    let mut writer = RecordWriter::new(out, count)?;
    for (k, v) in records {
        writer.push(k.as_ref(), v.as_ref())?;
    }
    writer.finish()
}

/// Writes the layout one record at a time, for records that come from somewhere a
/// borrowing iterator cannot reach (a RocksDB iterator hands out short-lived slices
/// and can fail between records).
pub struct RecordWriter<'o> {
    out: &'o mut dyn Write,
    count: u64,
    written: u64,
}

impl<'o> RecordWriter<'o> {
    /// Writes the header promising `count` records.
    pub fn new(out: &'o mut dyn Write, count: u64) -> io::Result<RecordWriter<'o>> {
        out.write_all(MAGIC)?;
        out.write_all(&[VERSION])?;
        out.write_all(&count.to_le_bytes())?;
        Ok(RecordWriter {
            out,
            count,
            written: 0,
        })
    }

    /// Writes one record; keys must come in strictly increasing order (the reader
    /// checks). More records than promised are refused.
    pub fn push(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        if self.written == self.count {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("more than the {} records promised", self.count),
            ));
        }
        put_field(self.out, key)?;
        put_field(self.out, value)?;
        self.written += 1;
        Ok(())
    }

    /// Checks that exactly the promised number of records was written.
    pub fn finish(self) -> io::Result<()> {
        if self.written != self.count {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("promised {} records, wrote {}", self.count, self.written),
            ));
        }
        Ok(())
    }
}

fn put_field(out: &mut dyn Write, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("a field of {} bytes does not fit the format", bytes.len()),
        )
    })?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(bytes)
}

/// Reads a map written by [`write_map`], rejecting anything malformed (bad magic,
/// oversized or unordered keys, missing or extra bytes) with `InvalidData`.
pub fn read_map(input: &mut dyn Read, limits: MapLimits) -> io::Result<Map> {
    let mut records = RecordReader::new(input, limits)?;
    let mut map = Map::new();
    while let Some((key, value)) = records.next_record()? {
        map.insert(key, value);
    }
    Ok(map)
}

/// Reads the layout one record at a time, so a state machine can stream an image
/// into its own storage without holding it in memory. Checks everything
/// [`read_map`] checks; the end of the records is reported only after the input was
/// found to end there too.
pub struct RecordReader<'i> {
    input: &'i mut dyn Read,
    limits: MapLimits,
    count: u64,
    remaining: u64,
    last_key: Option<Vec<u8>>,
    done: bool,
}

impl<'i> RecordReader<'i> {
    /// Reads and checks the header.
    pub fn new(input: &'i mut dyn Read, limits: MapLimits) -> io::Result<RecordReader<'i>> {
        let mut head = [0u8; 4 + 1 + 8];
        input.read_exact(&mut head)?;
        if &head[..4] != MAGIC {
            return Err(invalid("not a keel map image (bad magic)".into()));
        }
        if head[4] != VERSION {
            return Err(invalid(format!(
                "unsupported map image version {}",
                head[4]
            )));
        }
        let mut count = [0u8; 8];
        count.copy_from_slice(&head[5..13]);
        let count = u64::from_le_bytes(count);
        Ok(RecordReader {
            input,
            limits,
            count,
            remaining: count,
            last_key: None,
            done: false,
        })
    }

    /// How many records the header promises.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The next record, or `None` after the last one (and once nothing follows it).
    pub fn next_record(&mut self) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        if self.done {
            return Ok(None);
        }
        if self.remaining == 0 {
            let mut extra = [0u8; 1];
            if self.input.read(&mut extra)? != 0 {
                return Err(invalid("bytes after the last record".into()));
            }
            self.done = true;
            return Ok(None);
        }
        let key = get_field(self.input, self.limits.max_key_bytes, "key")?;
        let value = get_field(self.input, self.limits.max_value_bytes, "value")?;
        match &mut self.last_key {
            Some(last) if *last >= key => {
                return Err(invalid("keys out of order or repeated".into()));
            }
            Some(last) => {
                last.clear();
                last.extend_from_slice(&key);
            }
            None => self.last_key = Some(key.clone()),
        }
        self.remaining -= 1;
        Ok(Some((key, value)))
    }
}

fn get_field(input: &mut dyn Read, max_bytes: u32, what: &str) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len);
    if len > max_bytes {
        return Err(invalid(format!(
            "{what} of {len} bytes exceeds {max_bytes}"
        )));
    }
    let mut out = Vec::new();
    // Grows only as bytes arrive, so a lying length cannot force a big allocation.
    input.take(u64::from(len)).read_to_end(&mut out)?;
    if out.len() != len as usize {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("{what} cut short"),
        ));
    }
    Ok(out)
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl SnapshotProducer for Map {
    fn write_snapshot(&self, out: &mut dyn Write) -> io::Result<()> {
        write_map(self, out)
    }
}

/// Rebuilds a [`Map`] from a snapshot; the engine swaps it in once the store says the
/// stream passed its final check.
#[derive(Debug, Clone, Copy, Default)]
pub struct MapConsumer {
    /// Bounds on what one record may claim.
    pub limits: MapLimits,
}

impl SnapshotConsumer for MapConsumer {
    type Image = Map;

    fn read_snapshot(&self, input: &mut dyn Read) -> io::Result<Map> {
        read_map(input, self.limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Map {
        (0..100u32)
            .map(|i| (i.to_be_bytes().to_vec(), vec![i as u8; i as usize]))
            .collect()
    }

    #[test]
    fn round_trip() {
        let map = sample();
        let mut bytes = Vec::new();
        map.write_snapshot(&mut bytes).unwrap();
        let back = MapConsumer::default()
            .read_snapshot(&mut bytes.as_slice())
            .unwrap();
        assert_eq!(back, map);
    }

    #[test]
    fn the_record_reader_streams_what_write_map_wrote() {
        let map = sample();
        let mut bytes = Vec::new();
        write_map(&map, &mut bytes).unwrap();
        let mut input = bytes.as_slice();
        let mut reader = RecordReader::new(&mut input, MapLimits::default()).unwrap();
        assert_eq!(reader.count(), map.len() as u64);
        let mut back = Map::new();
        while let Some((k, v)) = reader.next_record().unwrap() {
            back.insert(k, v);
        }
        assert_eq!(back, map);
        assert!(reader.next_record().unwrap().is_none(), "stays at the end");
    }

    #[test]
    fn every_truncation_and_extension_is_rejected() {
        let mut bytes = Vec::new();
        write_map(&sample(), &mut bytes).unwrap();
        for cut in 0..bytes.len() {
            assert!(read_map(&mut &bytes[..cut], MapLimits::default()).is_err());
        }
        bytes.push(0);
        assert!(read_map(&mut bytes.as_slice(), MapLimits::default()).is_err());
    }

    #[test]
    fn lying_lengths_and_order_are_rejected() {
        let mut bytes = Vec::new();
        write_map(&sample(), &mut bytes).unwrap();
        // First key length claims 4 GiB.
        bytes[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(read_map(&mut bytes.as_slice(), MapLimits::default()).is_err());

        let mut few = Vec::new();
        let mut w = RecordWriter::new(&mut few, 2).unwrap();
        w.push(b"a", b"1").unwrap();
        assert!(w.finish().is_err(), "one record of two promised");
        let mut w = RecordWriter::new(&mut few, 1).unwrap();
        w.push(b"a", b"1").unwrap();
        assert!(w.push(b"b", b"2").is_err(), "a record beyond the promise");

        let mut dup = Vec::new();
        let rec = (b"a".to_vec(), b"1".to_vec());
        write_records(2, [(&rec.0, &rec.1), (&rec.0, &rec.1)], &mut dup).unwrap();
        assert!(read_map(&mut dup.as_slice(), MapLimits::default()).is_err());
    }
}
