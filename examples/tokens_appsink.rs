//! Feeding tokens to a consumer (a language model, an indexer) through appsink: each
//! sample is one self-contained chunk record; the caps carry the stream header.
//!
//! cargo run --example tokens_appsink -- VIDEO ENCODER_ONNX [FRAMES]

use anyhow::{Context, Result, bail};
use gst::prelude::*;
use gstomnitok::format::{ChunkRecord, Payload};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        bail!("usage: tokens_appsink VIDEO ENCODER_ONNX [FRAMES]");
    }
    let frames: u32 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(17);
    gst::init()?;
    gstomnitok::plugin_register_static()?;
    gstomnitok::runtime::init()?;
    // Cutting the stream before the video decoder gives an exact frame count.
    let pipeline = gst::parse::launch(&format!(
        "filesrc location=\"{}\" ! qtdemux name=demux demux.video_0 ! identity eos-after={} ! decodebin ! videoconvert ! \
         omnitokenc model-file=\"{}\" ! appsink name=tokens sync=false",
        args[1],
        frames + 1,
        args[2]
    ))?
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("tokens")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing)?;

    let mut header = None;
    while let Ok(sample) = sink.pull_sample() {
        let buffer = sample.buffer().context("sample without buffer")?;
        if buffer.flags().contains(gst::BufferFlags::HEADER) {
            continue; // the stream header, also in the caps
        }
        if header.is_none() {
            let caps = sample.caps().context("sample without caps")?;
            let h = gstomnitok::caps::to_header(caps).map_err(anyhow::Error::msg)?;
            println!(
                "stream: {}x{} (model runs at {}x{}), {} frames per chunk, grid {:?} per chunk, model {}",
                h.width,
                h.height,
                h.padded_width,
                h.padded_height,
                h.chunk_frames,
                h.grid,
                h.model_id_hex()
            );
            header = Some(h);
        }
        let map = buffer.map_readable()?;
        let (record, _) = ChunkRecord::decode(&map, header.as_ref().unwrap())?;
        match &record.payload {
            Payload::Tokens(tokens) => println!(
                "chunk pts {:>8.3} s: {} real frames, {} tokens, first {:?}",
                record.pts.unwrap_or(0) as f64 / 1e9,
                record.real_frames,
                tokens.len(),
                &tokens[..8.min(tokens.len())]
            ),
            Payload::Latents(values) => println!(
                "chunk pts {:>8.3} s: {} real frames, {} latent values",
                record.pts.unwrap_or(0) as f64 / 1e9,
                record.real_frames,
                values.len()
            ),
        }
    }
    let bus = pipeline.bus().unwrap();
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Error(e) = msg.view() {
            pipeline.set_state(gst::State::Null)?;
            bail!("pipeline error: {}", e.error());
        }
    }
    pipeline.set_state(gst::State::Null)?;
    Ok(())
}
