//! The main job: tokenize a real video to a token file with `omnitokenc`, reconstruct it
//! with `omnitokparse ! omnitokdec`, and report frames, tokens, bitrate, throughput and PSNR,
//! writing a side-by-side PNG (input | reconstruction).
//!
//! With INT8_MODEL_DIR (graphs from `omnitok-export --precision int8`), the same job runs
//! again with those and prints their speed and PSNR next to float32's, and how many tokens
//! equal float32's.
//!
//! cargo run --release --example demo -- VIDEO MODEL_DIR OUT_DIR [FRAMES] [INT8_MODEL_DIR]

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use gst::prelude::*;
use gst_video::prelude::*;

struct Frames {
    width: usize,
    height: usize,
    fps: gst::Fraction,
    data: Vec<Vec<u8>>,
}

/// Runs `desc` to EOS, collecting RGB frames from the appsink named `sink`; with
/// `max_frames`, the pipeline is prerolled and seeked to stop after that many frames.
fn run_collect(desc: &str, max_frames: Option<u32>) -> Result<(Frames, f64)> {
    let pipeline = gst::parse::launch(desc)?.downcast::<gst::Pipeline>().unwrap();
    let sink = pipeline
        .by_name("sink")
        .context("no appsink named sink")?
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let started = Instant::now();
    if let Some(n) = max_frames {
        pipeline.set_state(gst::State::Paused)?;
        pipeline.state(gst::ClockTime::from_seconds(60)).0?;
        let caps = sink
            .static_pad("sink")
            .and_then(|p| p.current_caps())
            .context("no caps after preroll")?;
        let fps = gst_video::VideoInfo::from_caps(&caps)?.fps();
        // stop half a frame after the start of frame n-1
        let frame_ns = gst::ClockTime::SECOND.nseconds() * fps.denom() as u64 / fps.numer().max(1) as u64;
        let stop = gst::ClockTime::from_nseconds(frame_ns * n as u64 - frame_ns / 2);
        pipeline.seek(
            1.0,
            gst::SeekFlags::FLUSH | gst::SeekFlags::ACCURATE,
            gst::SeekType::Set,
            gst::ClockTime::ZERO,
            gst::SeekType::Set,
            stop,
        )?;
    }
    pipeline.set_state(gst::State::Playing)?;
    let mut frames = Frames {
        width: 0,
        height: 0,
        fps: gst::Fraction::new(0, 1),
        data: Vec::new(),
    };
    while let Ok(sample) = sink.pull_sample() {
        let info = gst_video::VideoInfo::from_caps(sample.caps().context("sample without caps")?)?;
        let buffer = sample.buffer_owned().context("sample without buffer")?;
        let frame = gst_video::VideoFrame::from_buffer_readable(buffer, &info)
            .map_err(|_| anyhow::anyhow!("unmappable frame"))?;
        let (w, h, stride) = (
            info.width() as usize,
            info.height() as usize,
            frame.plane_stride()[0] as usize,
        );
        let plane = frame.plane_data(0)?;
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            rgb.extend_from_slice(&plane[y * stride..y * stride + w * 3]);
        }
        (frames.width, frames.height, frames.fps) = (w, h, info.fps());
        frames.data.push(rgb);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let bus = pipeline.bus().unwrap();
    let mut error = None;
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Error(e) = msg.view() {
            error = Some(format!(
                "{}: {}",
                e.src().map(|s| s.path_string()).unwrap_or_default(),
                e.error()
            ));
        }
    }
    pipeline.set_state(gst::State::Null)?;
    if let Some(e) = error {
        bail!("pipeline failed: {e}");
    }
    Ok((frames, elapsed))
}

/// Pushes `frames` through `appsrc ! omnitokenc ! filesink`; returns the wall time.
fn encode_to_file(frames: &Frames, model: &Path, out: &Path) -> Result<f64> {
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time ! omnitokenc model-file=\"{}\" ! filesink location=\"{}\"",
        model.display(),
        out.display()
    ))?
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline.by_name("src").unwrap().downcast::<gst_app::AppSrc>().unwrap();
    let info = gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, frames.width as u32, frames.height as u32)
        .fps(frames.fps)
        .build()?;
    src.set_caps(Some(&info.to_caps()?));
    let frame_ns = gst::ClockTime::SECOND.nseconds() * frames.fps.denom() as u64 / frames.fps.numer().max(1) as u64;
    let started = Instant::now();
    pipeline.set_state(gst::State::Playing)?;
    for (i, rgb) in frames.data.iter().enumerate() {
        let mut buffer = gst::Buffer::with_size(info.size())?;
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_nseconds(i as u64 * frame_ns));
            b.set_duration(gst::ClockTime::from_nseconds(frame_ns));
            let mut map = b.map_writable()?;
            let stride = info.stride()[0] as usize;
            for y in 0..frames.height {
                map[y * stride..y * stride + frames.width * 3]
                    .copy_from_slice(&rgb[y * frames.width * 3..(y + 1) * frames.width * 3]);
            }
        }
        src.push_buffer(buffer)?;
    }
    src.end_of_stream()?;
    let bus = pipeline.bus().unwrap();
    let result = match bus.timed_pop_filtered(gst::ClockTime::NONE, &[gst::MessageType::Eos, gst::MessageType::Error]) {
        Some(msg) => match msg.view() {
            gst::MessageView::Error(e) => Err(anyhow::anyhow!("encoding failed: {}", e.error())),
            _ => Ok(started.elapsed().as_secs_f64()),
        },
        None => Err(anyhow::anyhow!("encoding pipeline ended without EOS")),
    };
    pipeline.set_state(gst::State::Null)?;
    result
}

/// The tokens of a token file, all chunks in order (empty for latents).
fn file_tokens(path: &Path) -> Result<Vec<u32>> {
    let mut reader = gstomnitok::format::StreamReader::new();
    reader.push(&std::fs::read(path)?);
    let mut tokens = Vec::new();
    while let Some(item) = reader.next_item()? {
        if let gstomnitok::format::Item::Chunk(c, _) = item
            && let gstomnitok::format::Payload::Tokens(t) = c.payload
        {
            tokens.extend(t);
        }
    }
    Ok(tokens)
}

/// Encode to `tokens_file` and decode back with the graphs in `models`; returns the
/// reconstruction and the encode and decode wall times.
fn round_trip(input: &Frames, models: &Path, tokens_file: &Path) -> Result<(Frames, f64, f64)> {
    let (enc, dec) = (models.join("encoder.onnx"), models.join("decoder.onnx"));
    // frames -> omnitokenc -> token file
    let enc_s = encode_to_file(input, &enc, tokens_file)?;
    // token file -> omnitokparse -> omnitokdec -> frames
    let (recon, dec_s) = run_collect(
        &format!(
            "filesrc location=\"{}\" ! omnitokparse ! omnitokdec model-file=\"{}\" ! appsink name=sink sync=false",
            tokens_file.display(),
            dec.display()
        ),
        None,
    )?;
    if recon.data.len() != input.data.len() || (recon.width, recon.height) != (input.width, input.height) {
        bail!(
            "reconstruction has {} frames of {}x{}, input {} of {}x{}",
            recon.data.len(),
            recon.width,
            recon.height,
            input.data.len(),
            input.width,
            input.height
        );
    }
    Ok((recon, enc_s, dec_s))
}

fn psnr_of(input: &Frames, recon: &Frames) -> f64 {
    input.data.iter().zip(&recon.data).map(|(a, b)| psnr(a, b)).sum::<f64>() / input.data.len() as f64
}

fn psnr(a: &[u8], b: &[u8]) -> f64 {
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

fn write_side_by_side(path: &Path, a: &[u8], b: &[u8], w: usize, h: usize) -> Result<()> {
    let mut img = Vec::with_capacity(w * h * 6);
    for y in 0..h {
        img.extend_from_slice(&a[y * w * 3..(y + 1) * w * 3]);
        img.extend_from_slice(&b[y * w * 3..(y + 1) * w * 3]);
    }
    let file = std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), (2 * w) as u32, h as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header()?.write_image_data(&img)?;
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        bail!("usage: demo VIDEO MODEL_DIR OUT_DIR [FRAMES] [INT8_MODEL_DIR]");
    }
    let (video, models, out) = (
        PathBuf::from(&args[1]),
        PathBuf::from(&args[2]),
        PathBuf::from(&args[3]),
    );
    let max_frames: u32 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(34);
    let int8_models = args.get(5).map(PathBuf::from);
    std::fs::create_dir_all(&out)?;
    gst::init()?;
    gstomnitok::plugin_register_static()?;
    gstomnitok::runtime::init()?;
    let tokens_file = out.join(format!("{}.omnitok", video.file_stem().unwrap().to_string_lossy()));

    // 1. the first frames of the video, decoded
    let (input, _) = run_collect(
        &format!(
            "filesrc location=\"{}\" ! decodebin ! videoconvert ! video/x-raw,format=RGB ! appsink name=sink sync=false",
            video.display()
        ),
        Some(max_frames),
    )?;
    // 2. frames -> omnitokenc -> token file -> omnitokparse -> omnitokdec -> frames
    let (recon, enc_s, dec_s) = round_trip(&input, &models, &tokens_file)?;
    let n = input.data.len();
    let bytes = std::fs::metadata(&tokens_file)?.len();
    let seconds = n as f64 * input.fps.denom() as f64 / input.fps.numer().max(1) as f64;
    let header = {
        let raw = std::fs::read(&tokens_file)?;
        gstomnitok::format::StreamHeader::decode(&raw)?.0
    };
    let chunks = n.div_ceil(header.chunk_frames as usize);
    let per_chunk: u32 = header.grid.iter().product();
    let mean_psnr = psnr_of(&input, &recon);
    let png = out.join("side_by_side.png");
    write_side_by_side(&png, &input.data[n / 2], &recon.data[n / 2], input.width, input.height)?;

    println!("omnitok demo: {}", video.display());
    println!("  model       {}", header.model_name);
    println!(
        "  frames      {n} of {}x{} (padded {}x{}), {} chunks of {}",
        input.width, input.height, header.padded_width, header.padded_height, chunks, header.chunk_frames
    );
    if header.codebook_size > 0 {
        let tokens = chunks as u64 * per_chunk as u64;
        println!(
            "  tokens      {tokens} ({} per chunk, grid {:?}, codebook {})",
            per_chunk, header.grid, header.codebook_size
        );
        // Payload bits only: the file less its header and the 48 bytes framing each chunk.
        let framing = header.encoded_len() as u64 + chunks as u64 * (48 + header.frame_table_len());
        let payload_bits = bytes.saturating_sub(framing) as f64 * 8.0;
        println!(
            "  coding      {}: {:.3} bits per token ({} bits packed), {:.1} kbit/s of token payload",
            header.token_coding.name(),
            payload_bits / tokens.max(1) as f64,
            gstomnitok::format::coding::index_bits(header.codebook_size),
            payload_bits / seconds / 1000.0
        );
    } else {
        println!(
            "  latents     {} values ({} channels, grid {:?})",
            chunks as u64 * per_chunk as u64 * header.channels as u64,
            header.channels,
            header.grid
        );
    }
    println!(
        "  token file  {} ({bytes} bytes, {:.1} kbit/s)",
        tokens_file.display(),
        bytes as f64 * 8.0 / seconds / 1000.0
    );
    println!("  encode      {:.2} s ({:.2} frames/s)", enc_s, n as f64 / enc_s);
    println!("  decode      {:.2} s ({:.2} frames/s)", dec_s, n as f64 / dec_s);
    println!("  PSNR        {mean_psnr:.2} dB (mean over frames)");
    println!("  picture     {} (middle frame: input | reconstruction)", png.display());
    if let Some(int8) = int8_models {
        // the same job with the int8 graphs, next to float32's
        let file8 = out.join(format!("{}.int8.omnitok", video.file_stem().unwrap().to_string_lossy()));
        let (recon8, enc8, dec8) = round_trip(&input, &int8, &file8)?;
        let (t32, t8) = (file_tokens(&tokens_file)?, file_tokens(&file8)?);
        let equal = t32.iter().zip(&t8).filter(|(a, b)| a == b).count();
        println!("  precision   encode          decode          PSNR");
        println!(
            "  f32         {enc_s:6.2} s ({:5.2}/s) {dec_s:6.2} s ({:5.2}/s) {mean_psnr:6.2} dB",
            n as f64 / enc_s,
            n as f64 / dec_s
        );
        println!(
            "  int8        {enc8:6.2} s ({:5.2}/s) {dec8:6.2} s ({:5.2}/s) {:6.2} dB  ({} of {} tokens equal to f32's, {:.1}%; {})",
            n as f64 / enc8,
            n as f64 / dec8,
            psnr_of(&input, &recon8),
            equal,
            t32.len(),
            100.0 * equal as f64 / t32.len().max(1) as f64,
            int8.display()
        );
    }
    Ok(())
}
