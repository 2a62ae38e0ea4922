//! Incremental stream parser.

use super::{ChunkRecord, FormatError, MAGIC, StreamHeader, VERSION};

/// One unit of a token stream, with its exact bytes.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A stream header and its raw bytes: the first unit, and (version 2) the start of
    /// every later segment.
    Header(StreamHeader, Vec<u8>),
    /// A chunk record and its raw bytes (sync marker to CRC).
    Chunk(ChunkRecord, Vec<u8>),
}

impl Item {
    /// The raw bytes of this unit, as they appeared in the stream.
    pub fn raw(&self) -> &[u8] {
        match self {
            Item::Header(_, raw) | Item::Chunk(_, raw) => raw,
        }
    }
}

/// Incremental parser for a token stream delivered in arbitrary pieces.
///
/// Feed bytes with [`StreamReader::push`], take complete units with
/// [`StreamReader::next_item`] until it returns `Ok(None)`, and call
/// [`StreamReader::finish`] at end of stream.
///
/// Garbage is rejected as early as possible (magic / sync marker from the
/// first wrong byte, record length from its 8-byte prefix), and the reader
/// never allocates beyond the bytes it was given. After an error the reader
/// is stuck: every later `next_item` / `finish` returns the same error.
#[derive(Debug, Default)]
pub struct StreamReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already delivered.
    pos: usize,
    /// Stream offset of `buf[0]`.
    base: u64,
    /// The header of the current segment.
    header: Option<StreamHeader>,
    /// Format version of the first header (a version 1 stream has one segment).
    version: u16,
    /// Headers delivered (segments started).
    segments: u64,
    chunks: u64,
    error: Option<FormatError>,
}

impl StreamReader {
    /// A reader expecting a stream header first.
    pub fn new() -> Self {
        Self::default()
    }

    /// A reader that continues a stream whose `header` (encoded in `header_len` bytes) is
    /// already known, at the start of chunk record `chunk_index` of its first segment (after
    /// a seek): the next unit is that record (or, version 2, a new header), offsets and chunk
    /// indices in errors are the stream's.
    /// `None` when that position does not fit a `u64`.
    /// For a `coded` stream (variable record lengths) this needs the record's offset: use
    /// [`StreamReader::resume_at`]; here `None`.
    pub fn resume(header: StreamHeader, header_len: u64, chunk_index: u64) -> Option<Self> {
        if !header.fixed_record_len() {
            return None;
        }
        let record_len = header.chunk_record_len() as u64;
        let base = chunk_index.checked_mul(record_len)?.checked_add(header_len)?;
        Some(Self::resume_at(header, base, chunk_index))
    }

    /// A reader that continues a stream whose `header` is known at byte `offset`, the start
    /// of chunk record `chunk_index` (found by hopping record prefixes or from an index of
    /// records already read); as [`StreamReader::resume`] otherwise.
    pub fn resume_at(header: StreamHeader, offset: u64, chunk_index: u64) -> Self {
        Self {
            base: offset,
            header: Some(header),
            version: VERSION,
            segments: 1,
            chunks: chunk_index,
            ..Self::default()
        }
    }

    /// Appends input bytes. Once the reader has failed, input is discarded.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if self.pos > 0 {
            // Drop delivered bytes before growing; what stays is at most one
            // partial unit plus undelivered items.
            self.buf.drain(..self.pos);
            self.base += self.pos as u64;
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete unit, `Ok(None)` if more bytes are needed.
    pub fn next_item(&mut self) -> Result<Option<Item>, FormatError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        match self.parse() {
            Ok((item, len)) => {
                self.pos += len;
                Ok(Some(item))
            }
            Err(e) if e.is_truncated() => Ok(None),
            Err(e) => {
                self.error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Ends the stream: fails with [`FormatError::Truncated`] (saying how many
    /// bytes were left over and how many more were needed) if the input
    /// stopped inside a unit. An empty stream is not an error here; check
    /// [`StreamReader::header`] if a header is required.
    pub fn finish(&mut self) -> Result<(), FormatError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let left = self.buf.len() - self.pos;
        if left == 0 {
            return Ok(());
        }
        let e = match self.parse() {
            Ok(_) => FormatError::UndeliveredItems { bytes: left },
            Err(e) => e,
        };
        self.error = Some(e.clone());
        Err(e)
    }

    /// The header of the current segment, once it has been delivered.
    pub fn header(&self) -> Option<&StreamHeader> {
        self.header.as_ref()
    }

    /// Stream headers delivered so far (segments started; 1 after a resume).
    pub fn segments(&self) -> u64 {
        self.segments
    }

    /// Number of chunk records delivered so far.
    pub fn chunks_read(&self) -> u64 {
        self.chunks
    }

    /// Stream offset of the first byte not yet delivered.
    pub fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Bytes received but not yet delivered as items.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Tries to decode the unit at `pos`; returns it and its length.
    fn parse(&mut self) -> Result<(Item, usize), FormatError> {
        let avail = &self.buf[self.pos..];
        let offset = self.base + self.pos as u64;
        match &self.header {
            None => {
                let (header, len, version) = StreamHeader::decode_versioned(avail)?;
                let raw = avail[..len].to_vec();
                self.header = Some(header.clone());
                self.version = version;
                self.segments += 1;
                Ok((Item::Header(header, raw), len))
            }
            // Version 2: a header may stand where a record starts ("OM", not "OT").
            Some(_)
                if self.version >= 2
                    && avail.len() >= 2
                    && avail[..avail.len().min(8)] == MAGIC[..avail.len().min(8)] =>
            {
                let (header, len, version) = StreamHeader::decode_versioned(avail)?;
                if version < 2 {
                    return Err(FormatError::invalid(
                        "version",
                        format!("a version {version} header at byte offset {offset} cannot start a new segment"),
                    ));
                }
                let raw = avail[..len].to_vec();
                self.header = Some(header.clone());
                self.segments += 1;
                Ok((Item::Header(header, raw), len))
            }
            Some(header) => {
                let (chunk, len) = ChunkRecord::decode_at(avail, header, Some(self.chunks), offset)?;
                let raw = avail[..len].to_vec();
                self.chunks += 1;
                Ok((Item::Chunk(chunk, raw), len))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{Rng, chunk, header, stream};
    use super::super::{MAX_RECORD_LEN, Payload, PayloadType};
    use super::*;

    /// Feeds `bytes` in pieces of the given sizes (cycled), draining after
    /// every push; returns the items and the result of `finish`.
    fn feed(bytes: &[u8], sizes: &[usize]) -> (Vec<Item>, Result<(), FormatError>) {
        let mut r = StreamReader::new();
        let mut items = Vec::new();
        let mut at = 0;
        let mut k = 0;
        while at < bytes.len() {
            let n = sizes[k % sizes.len()].max(1).min(bytes.len() - at);
            k += 1;
            r.push(&bytes[at..at + n]);
            at += n;
            loop {
                match r.next_item() {
                    Ok(Some(item)) => items.push(item),
                    Ok(None) => break,
                    Err(e) => return (items, Err(e)),
                }
            }
        }
        let fin = r.finish();
        (items, fin)
    }

    fn check_items(items: &[Item], bytes: &[u8], h: &StreamHeader, n: u64) {
        assert_eq!(items.len() as u64, n + 1);
        let joined: Vec<u8> = items.iter().flat_map(|i| i.raw().to_vec()).collect();
        assert_eq!(joined, bytes);
        match &items[0] {
            Item::Header(got, _) => assert_eq!(got, h),
            other => panic!("expected header, got {other:?}"),
        }
        for (i, item) in items[1..].iter().enumerate() {
            let Item::Chunk(c, raw) = item else {
                panic!("expected chunk")
            };
            assert_eq!(ChunkRecord::decode(raw, h).unwrap().0, *c);
            assert_eq!(c.payload, chunk(h, i as u64 + 1).payload);
        }
    }

    #[test]
    fn every_split_gives_the_same_items() {
        for pt in PayloadType::ALL {
            let h = header(pt);
            let (bytes, _) = stream(&h, 5);
            let (whole, fin) = feed(&bytes, &[bytes.len()]);
            fin.unwrap();
            check_items(&whole, &bytes, &h, 5);
            let Item::Chunk(last, _) = &whole[5] else { panic!() };
            assert_eq!(last.real_frames, 2);
            assert_eq!(last.duration, None);

            for bs in 1..=64 {
                let (items, fin) = feed(&bytes, &[bs]);
                fin.unwrap();
                assert_eq!(items, whole, "{pt} block size {bs}");
            }
            let mut rng = Rng(0x5eed ^ u64::from(pt.code()));
            for round in 0..40 {
                let sizes: Vec<usize> = (0..7)
                    .map(|_| match rng.below(3) {
                        0 => 1 + rng.below(8) as usize,
                        1 => 65 + rng.below(400) as usize,
                        _ => 100 + rng.below(bytes.len() as u64) as usize,
                    })
                    .collect();
                let (items, fin) = feed(&bytes, &sizes);
                fin.unwrap();
                assert_eq!(items, whole, "{pt} round {round} sizes {sizes:?}");
            }
        }
    }

    #[test]
    fn many_items_in_one_push_and_late_drain() {
        let h = header(PayloadType::U16);
        let (bytes, _) = stream(&h, 5);
        let mut r = StreamReader::new();
        // Push everything one byte at a time without draining, then drain.
        for b in &bytes {
            r.push(std::slice::from_ref(b));
        }
        let mut items = Vec::new();
        while let Some(item) = r.next_item().unwrap() {
            items.push(item);
        }
        check_items(&items, &bytes, &h, 5);
        assert_eq!(r.chunks_read(), 5);
        assert_eq!(r.offset(), bytes.len() as u64);
        assert_eq!(r.buffered(), 0);
        assert_eq!(r.header(), Some(&h));
        r.finish().unwrap();
    }

    #[test]
    fn finish_with_undelivered_items() {
        let h = header(PayloadType::U16);
        let (bytes, _) = stream(&h, 2);
        let mut r = StreamReader::new();
        r.push(&bytes);
        assert!(matches!(
            r.finish(),
            Err(FormatError::UndeliveredItems { bytes: n }) if n == bytes.len()
        ));
    }

    #[test]
    fn empty_stream_finishes_cleanly() {
        let mut r = StreamReader::new();
        assert_eq!(r.next_item().unwrap(), None);
        r.finish().unwrap();
        assert!(r.header().is_none());
    }

    #[test]
    fn truncated_at_every_cut() {
        for pt in [PayloadType::U16, PayloadType::F32] {
            let h = header(pt);
            let (bytes, bounds) = stream(&h, 3);
            for cut in 0..=bytes.len() {
                let (items, fin) = feed(&bytes[..cut], &[7]);
                let done = bounds.iter().rposition(|&b| b <= cut).unwrap();
                assert_eq!(items.len(), done, "cut {cut}");
                if bounds.contains(&cut) {
                    fin.unwrap();
                    continue;
                }
                match fin {
                    Err(FormatError::Truncated { unit, have, needed }) => {
                        assert_eq!(have, cut - bounds[done], "cut {cut}");
                        assert_eq!(unit, if done == 0 { "stream header" } else { "chunk record" });
                        if done > 0 || have >= 12 {
                            assert_eq!(needed, bounds[done + 1] - cut, "cut {cut}");
                        }
                        let msg = fin.unwrap_err().to_string();
                        assert!(msg.contains(&format!("{have} byte(s) present")), "{msg}");
                    }
                    other => panic!("cut {cut}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn bad_magic_from_reader() {
        let mut r = StreamReader::new();
        r.push(b"\x1aE\xdf\xa3 matroska");
        let e = r.next_item().unwrap_err();
        assert!(matches!(e, FormatError::BadMagic { .. }));
        // Sticky, and later input is not buffered.
        r.push(&[0u8; 4096]);
        assert!(r.buffered() < 4096);
        assert_eq!(r.next_item().unwrap_err(), e);
        assert_eq!(r.finish().unwrap_err(), e);
    }

    #[test]
    fn wrong_version_from_reader() {
        let h = header(PayloadType::U16);
        let mut b = h.encode();
        b[8] = 4;
        let (items, fin) = feed(&b, &[1]);
        assert!(items.is_empty());
        assert_eq!(
            fin.unwrap_err(),
            FormatError::UnsupportedVersion { found: 4, supported: 3 }
        );
    }

    #[test]
    fn header_crc_from_reader() {
        let h = header(PayloadType::U16);
        let (mut bytes, _) = stream(&h, 2);
        bytes[50] ^= 0x10;
        let (items, fin) = feed(&bytes, &[13]);
        assert!(items.is_empty());
        assert!(matches!(fin, Err(FormatError::HeaderCrcMismatch { .. })));
    }

    #[test]
    fn chunk_crc_reports_chunk_index() {
        let h = header(PayloadType::F16);
        let (mut bytes, bounds) = stream(&h, 5);
        // Flip one payload byte of chunk 3 (items: header, chunks 0..5).
        let at = bounds[4] + 44 + 10;
        bytes[at] ^= 0x01;
        let (items, fin) = feed(&bytes, &[5]);
        assert_eq!(items.len(), 4, "header + chunks 0..=2");
        let e = fin.unwrap_err();
        assert!(
            matches!(e, FormatError::ChunkCrcMismatch { chunk: Some(3), .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("chunk 3"), "{e}");
    }

    #[test]
    fn bad_sync_reports_stream_offset() {
        let h = header(PayloadType::U32);
        let (mut bytes, bounds) = stream(&h, 3);
        bytes[bounds[3] + 1] = b'?';
        let (items, fin) = feed(&bytes, &[1]);
        assert_eq!(items.len(), 3);
        let e = fin.unwrap_err();
        assert_eq!(
            e,
            FormatError::BadSync {
                offset: bounds[3] as u64,
                found: b"O?".to_vec()
            }
        );
        assert!(e.to_string().contains(&format!("byte offset {}", bounds[3])), "{e}");
    }

    #[test]
    fn oversized_length_rejected_without_allocating() {
        let h = header(PayloadType::U16);
        let mut r = StreamReader::new();
        r.push(&h.encode());
        assert!(matches!(r.next_item(), Ok(Some(Item::Header(..)))));
        let mut rec = b"OTKC".to_vec();
        rec.extend_from_slice(&(MAX_RECORD_LEN + 1).to_le_bytes());
        // Nothing beyond the 8 bytes is needed to reject it.
        for b in &rec {
            r.push(std::slice::from_ref(b));
        }
        let e = r.next_item().unwrap_err();
        assert_eq!(
            e,
            FormatError::RecordTooLarge {
                offset: h.encoded_len() as u64,
                len: u64::from(MAX_RECORD_LEN) + 1,
                max: MAX_RECORD_LEN
            }
        );
        assert!(r.buffered() <= 8);
    }

    #[test]
    fn wrong_record_length_rejected_early() {
        let h = header(PayloadType::U16);
        let mut r = StreamReader::new();
        r.push(&h.encode());
        r.next_item().unwrap();
        r.push(b"OTKC\x00\x00\x10\x00");
        assert!(matches!(
            r.next_item(),
            Err(FormatError::InvalidField {
                field: "record_len",
                ..
            })
        ));
    }

    #[test]
    fn resume_continues_at_a_chunk() {
        let h = header(PayloadType::U16);
        let (bytes, bounds) = stream(&h, 5);
        let hl = bounds[1];
        let rl = h.chunk_record_len();
        let mut r = StreamReader::resume(h.clone(), hl as u64, 3).unwrap();
        assert_eq!((r.offset(), r.chunks_read()), ((hl + 3 * rl) as u64, 3));
        assert_eq!(r.header(), Some(&h));
        r.push(&bytes[hl + 3 * rl..]);
        let Some(Item::Chunk(c, raw)) = r.next_item().unwrap() else {
            panic!("a chunk first")
        };
        assert_eq!(c, chunk(&h, 4)); // chunk i is made with seed i + 1
        assert_eq!(raw, bytes[hl + 3 * rl..hl + 4 * rl]);
        assert!(matches!(r.next_item(), Ok(Some(Item::Chunk(..)))));
        assert_eq!(r.next_item().unwrap(), None);
        r.finish().unwrap();
        // Errors name the stream's chunk index and offset.
        let mut bad = bytes[hl + 3 * rl..].to_vec();
        bad[rl + 50] ^= 1;
        let mut r = StreamReader::resume(h.clone(), hl as u64, 3).unwrap();
        r.push(&bad);
        assert!(r.next_item().unwrap().is_some());
        let e = r.next_item().unwrap_err();
        assert!(e.to_string().contains("chunk 4"), "{e}");
        assert!(StreamReader::resume(h, hl as u64, u64::MAX).is_none());
    }

    /// Version 1 keeps its rule: a second header is a bad sync marker.
    #[test]
    fn second_header_in_version_1_is_bad_sync() {
        let h = header(PayloadType::U16);
        let mut bytes = as_version_1(h.encode());
        bytes.extend_from_slice(&as_version_1(h.encode()));
        let (items, fin) = feed(&bytes, &[64]);
        assert_eq!(items.len(), 1);
        assert!(matches!(fin, Err(FormatError::BadSync { .. })));
    }

    /// A header rewritten as version 1 (same layout, flags zero).
    fn as_version_1(mut b: Vec<u8>) -> Vec<u8> {
        b[8..10].copy_from_slice(&1u16.to_le_bytes());
        b[94..96].copy_from_slice(&[0, 0]);
        let n = b.len();
        let crc = crc32fast::hash(&b[..n - 4]);
        b[n - 4..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// A version 1 stream (header and records as omnitokenc wrote them before v2) still reads.
    #[test]
    fn version_1_stream_reads() {
        let h = header(PayloadType::U16);
        let (bytes, bounds) = stream(&h, 3);
        let mut v1 = as_version_1(bytes[..bounds[1]].to_vec());
        v1.extend_from_slice(&bytes[bounds[1]..]);
        let (items, fin) = feed(&v1, &[7]);
        fin.unwrap();
        assert_eq!(items.len(), 4);
        assert!(matches!(&items[0], Item::Header(got, _) if *got == h));
    }

    /// Version 2: a header wherever a record may start begins a new segment whose records
    /// follow its geometry (the record length changes); every split gives the same items.
    #[test]
    fn version_2_segments_follow_each_header() {
        let a = header(PayloadType::U16);
        let mut b = header(PayloadType::F32);
        b.grid = [1, 2, 2];
        b.width = 10;
        let mut c = header(PayloadType::U16);
        c.frame_pts = true;
        c.fps_n = 0;
        c.fps_d = 1;
        let mut bytes = Vec::new();
        for (h, n) in [(&a, 2), (&b, 3), (&b, 0), (&c, 2)] {
            bytes.extend_from_slice(&h.encode());
            for i in 0..n {
                bytes.extend_from_slice(&chunk(h, i + 1).encode(h).unwrap());
            }
        }
        let (whole, fin) = feed(&bytes, &[bytes.len()]);
        fin.unwrap();
        let kinds: Vec<String> = whole
            .iter()
            .map(|i| match i {
                Item::Header(h, _) => format!("H{}", h.payload_type),
                Item::Chunk(c, _) => format!("C{}", c.payload.len()),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "Hu16", "C24", "C24", "Hf32", "C12", "C12", "C12", "Hf32", "Hu16", "C24", "C24"
            ]
        );
        let Item::Chunk(last, _) = &whole[10] else { panic!() };
        assert_eq!(last, &chunk(&c, 2));
        assert_eq!(last.frame_pts.as_ref().unwrap()[4], Some(2004));
        for bs in [1, 2, 3, 7, 64] {
            let mut r = StreamReader::new();
            let (items, fin) = feed(&bytes, &[bs]);
            fin.unwrap();
            assert_eq!(items, whole, "block size {bs}");
            r.push(&bytes);
            while r.next_item().unwrap().is_some() {}
            assert_eq!((r.segments(), r.chunks_read()), (4, 7));
        }
        // A version 1 header cannot start a segment of a version 2 stream.
        let mut bad = a.encode();
        bad.extend_from_slice(&as_version_1(a.encode()));
        let e = feed(&bad, &[5]).1.unwrap_err();
        assert!(matches!(e, FormatError::InvalidField { field: "version", .. }), "{e}");
        // Cut inside the second header: truncated stream header.
        let cut = a.encoded_len() + 2 * a.chunk_record_len() + 50;
        let e = feed(&bytes[..cut], &[9]).1.unwrap_err();
        assert!(
            matches!(
                e,
                FormatError::Truncated {
                    unit: "stream header",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn garbage_never_panics() {
        let h = header(PayloadType::U16);
        let (good, _) = stream(&h, 3);
        let mut rng = Rng(0xbad_5eed);
        for round in 0..300 {
            let mut bytes = if round % 3 == 0 {
                // Pure noise, sometimes starting with a valid header.
                let n = rng.below(600) as usize;
                let mut v = if round % 2 == 0 { h.encode() } else { Vec::new() };
                v.extend((0..n).map(|_| rng.next_u64() as u8));
                v
            } else {
                good.clone()
            };
            // Random byte flips, truncation, or inserted bytes.
            for _ in 0..1 + rng.below(4) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.below(bytes.len() as u64) as usize;
                match rng.below(3) {
                    0 => bytes[at] ^= 1 << rng.below(8),
                    1 => bytes.truncate(at),
                    _ => bytes.insert(at, rng.next_u64() as u8),
                }
            }
            let sizes = [1 + rng.below(50) as usize, 1 + rng.below(500) as usize];
            let (items, fin) = feed(&bytes, &sizes);
            let total: usize = items.iter().map(|i| i.raw().len()).sum();
            assert!(total <= bytes.len());
            if fin.is_ok() {
                assert_eq!(total, bytes.len());
            }
        }
    }

    #[test]
    fn one_megabyte_push() {
        // A larger stream in a single push and in 1 MiB blocks.
        let mut h = header(PayloadType::F32);
        h.grid = [3, 32, 48];
        h.channels = 16;
        let mut bytes = h.encode();
        let n = h.elements_per_chunk() as usize;
        let c = ChunkRecord {
            pts: Some(0),
            duration: Some(1),
            real_frames: h.chunk_frames,
            grid: h.grid,
            payload: Payload::Latents((0..n).map(|i| i as f32).collect()),
            frame_pts: None,
        };
        let rec = c.encode(&h).unwrap();
        for _ in 0..5 {
            bytes.extend_from_slice(&rec);
        }
        assert!(bytes.len() > 1 << 20);
        let (items, fin) = feed(&bytes, &[1 << 20]);
        fin.unwrap();
        assert_eq!(items.len(), 6);
        assert!(items[1..].iter().all(|i| *i == Item::Chunk(c.clone(), rec.clone())));
    }
}
