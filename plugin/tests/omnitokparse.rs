//! omnitokparse: framing in any block size, caps from the header, errors on the bus,
//! and the `OMNITOK\0` typefinder.

mod support;

use support::*;

const LAUNCH: &str = "appsrc name=in ! omnitokparse ! appsink name=out";

#[test]
fn any_block_size_gives_the_same_chunks_and_caps() {
    init();
    let s = synthetic(25);
    let bytes = s.bytes();
    for block in [1, 7, 4096, bytes.len()] {
        let r = run(LAUNCH, Some((None, blocks(&bytes, block))));
        assert!(r.error.is_none(), "block {block}: {:?}", r.error);
        assert_eq!(r.samples.len(), 1 + s.records.len(), "block {block}");
        // Header buffer first, flagged HEADER, exact bytes.
        let hb = r.samples[0].buffer().unwrap();
        assert!(hb.flags().contains(gst::BufferFlags::HEADER));
        assert_eq!(&*hb.map_readable().unwrap(), &s.header_bytes[..]);
        // Caps: every header field, parsed=true, streamheader.
        let caps = r.samples[0].caps().unwrap();
        let st = caps.structure(0).unwrap();
        assert_eq!(st.name(), "video/x-omnitok");
        assert!(st.get::<bool>("parsed").unwrap());
        let sh = st.get::<gst::Array>("streamheader").unwrap();
        let shb = sh.as_slice()[0].get::<gst::Buffer>().unwrap();
        assert_eq!(&*shb.map_readable().unwrap(), &s.header_bytes[..]);
        let mut expect = s.header.clone();
        expect.model_name.clear();
        assert_eq!(gstomnitok::caps::to_header(caps).unwrap(), expect);
        // One buffer per record, exact raw bytes, timestamps from the record.
        for (i, (rec, raw)) in s.records.iter().zip(&s.record_bytes).enumerate() {
            let b = r.samples[i + 1].buffer().unwrap();
            assert_eq!(&*b.map_readable().unwrap(), &raw[..], "block {block} chunk {i}");
            assert_eq!(b.pts().map(|t| t.nseconds()), rec.pts);
            assert_eq!(b.duration().map(|t| t.nseconds()), rec.duration);
            assert!(!b.flags().contains(gst::BufferFlags::HEADER));
            assert_eq!(b.offset(), i as u64);
        }
    }
}

fn expect_error(bytes: Vec<u8>, block: usize, needle: &str) {
    let r = run(LAUNCH, Some((None, blocks(&bytes, block))));
    let (msg, debug) = r
        .error
        .unwrap_or_else(|| panic!("no error for '{needle}' ({} samples)", r.samples.len()));
    assert!(msg.contains(needle), "'{msg}' ({debug}) does not name '{needle}'");
}

#[test]
fn bad_magic_is_an_error() {
    init();
    let mut bytes = synthetic(25).bytes();
    bytes[0..4].copy_from_slice(b"RIFF");
    expect_error(bytes, 4096, "bad magic");
}

#[test]
fn wrong_version_is_an_error() {
    init();
    let mut bytes = synthetic(25).bytes();
    bytes[8] = 4;
    expect_error(bytes, 7, "unsupported format version 4");
}

#[test]
fn header_crc_flip_is_an_error() {
    init();
    let mut bytes = synthetic(25).bytes();
    bytes[50] ^= 0x01;
    expect_error(bytes, 4096, "stream header CRC mismatch");
}

#[test]
fn chunk_crc_flip_names_the_chunk() {
    init();
    let s = synthetic(25);
    let mut bytes = s.bytes();
    // A payload byte of chunk 2.
    let at = s.header_bytes.len() + 2 * s.record_bytes[0].len() + 60;
    bytes[at] ^= 0x10;
    for block in [1, 4096] {
        expect_error(bytes.clone(), block, "chunk CRC mismatch in chunk 2");
    }
    // The chunks before the bad one still came out.
    let r = run(LAUNCH, Some((None, blocks(&bytes, bytes.len()))));
    assert_eq!(r.samples.len(), 3);
}

#[test]
fn bad_sync_is_an_error() {
    init();
    let s = synthetic(25);
    let mut bytes = s.bytes();
    let at = s.header_bytes.len() + s.record_bytes[0].len();
    bytes[at] = b'X';
    expect_error(bytes, 7, "bad sync marker");
}

#[test]
fn truncated_stream_is_an_error_at_eos() {
    init();
    let mut bytes = synthetic(25).bytes();
    bytes.truncate(bytes.len() - 10);
    expect_error(bytes, 4096, "truncated chunk record");
    let bytes = synthetic(25).header_bytes[..50].to_vec();
    expect_error(bytes, 1, "truncated stream header");
}

#[test]
fn empty_input_is_an_error() {
    init();
    let r = run(LAUNCH, Some((None, vec![])));
    let (msg, _) = r.error.expect("error");
    assert!(msg.contains("no token stream"), "{msg}");
}

#[test]
fn typefinder_recognises_token_streams() {
    init();
    let bytes = synthetic(25).bytes();
    let (caps, prob) = gst_base::functions::type_find_helper_for_data(None::<&gst::Object>, &bytes[..]).unwrap();
    assert_eq!(prob, gst::TypeFindProbability::Maximum);
    assert_eq!(caps.structure(0).unwrap().name(), "video/x-omnitok");
    assert!(
        gst_base::functions::type_find_helper_for_data(None::<&gst::Object>, &b"RIFF1234abcdefgh"[..])
            .map(|(c, _)| c.structure(0).unwrap().name() != "video/x-omnitok")
            .unwrap_or(true)
    );
}

/// A Harness around omnitokparse, and a synthetic 25 fps stream.
fn harness() -> (TokenStream, gst_check::Harness) {
    init();
    let elem = gst::ElementFactory::make("omnitokparse").build().unwrap();
    let mut h = gst_check::Harness::with_element(&elem, Some("sink"), Some("src"));
    h.set_src_caps_str("video/x-omnitok");
    (synthetic(25), h)
}

/// FLUSH_START + FLUSH_STOP (a seek upstream).
fn flush(h: &mut gst_check::Harness) {
    assert!(h.push_event(gst::event::FlushStart::new()));
    assert!(h.push_event(gst::event::FlushStop::new(true)));
}

#[test]
fn flush_restarts_at_a_new_stream() {
    let (s, mut h) = harness();
    let bytes = s.bytes();
    // Half of the stream, then a flush, then the whole stream again from byte 0.
    let half = s.header_bytes.len() + s.record_bytes[0].len() + 20;
    h.push(gst::Buffer::from_slice(bytes[..half].to_vec())).unwrap();
    flush(&mut h);
    assert!(h.push_event(gst::event::Segment::new(
        &gst::FormattedSegment::<gst::format::Bytes>::new()
    )));
    h.push(gst::Buffer::from_slice(bytes.clone())).unwrap();
    h.push_event(gst::event::Eos::new());
    let mut got = Vec::new();
    while let Some(b) = h.try_pull() {
        got.push(b.map_readable().unwrap().to_vec());
    }
    // Before the flush: header + chunk 0; after it: header + 4 chunks.
    assert_eq!(got.len(), 2 + 5);
    assert_eq!(got[2], s.header_bytes);
    assert_eq!(got[6], *s.record_bytes.last().unwrap());
}

#[test]
fn resumes_at_a_chunk_boundary_after_a_seek() {
    let (s, mut h) = harness();
    h.push(gst::Buffer::from_slice(s.header_bytes.clone())).unwrap();
    flush(&mut h);
    let start = (s.header_bytes.len() + 2 * s.record_bytes[0].len()) as u64;
    let mut seg = gst::FormattedSegment::<gst::format::Bytes>::new();
    seg.set_start(gst::format::Bytes::from_u64(start));
    assert!(h.push_event(gst::event::Segment::new(&seg)));
    let rest: Vec<u8> = s.record_bytes[2..].concat();
    h.push(gst::Buffer::from_slice(rest)).unwrap();
    let mut got = Vec::new();
    while let Some(b) = h.try_pull() {
        got.push(b);
    }
    assert_eq!(got.len(), 3);
    assert_eq!(&*got[1].map_readable().unwrap(), &s.record_bytes[2][..]);
    assert_eq!(got[1].offset(), 2);
    assert!(got[1].flags().contains(gst::BufferFlags::DISCONT));
}
