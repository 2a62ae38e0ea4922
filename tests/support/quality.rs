//! int8 against float32 on real content: clips and stills from the sample videos, the trained
//! checkpoint exported in both precisions, token agreement and PSNR. Shared by
//! `examples/int8_quality.rs` (the tables) and `tests/int8.rs` (the thresholds), included
//! with `#[path]` (it needs GStreamer, a dev-dependency, to read the videos).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use gst::prelude::*;
use ndarray::{ArrayD, IxDyn};
use omnitok_export::onnx::ModelProto;
use omnitok_export::quantize::{self, Int8Policy};
use ort::session::Session;
use ort::value::Tensor;

/// `OMNITOK_TRAINED_DIR`, default `../shared/trained`, when it holds `trained_vq.ckpt`;
/// `None` after saying why, a panic under `CI=true`.
pub fn trained_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("OMNITOK_TRAINED_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| omnitok::root().join("../shared/trained"));
    if dir.join("trained_vq.ckpt").is_file() {
        return Some(dir);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true but the trained checkpoint is missing at {} (set OMNITOK_TRAINED_DIR)",
            dir.display()
        );
    }
    eprintln!(
        "skipped: trained checkpoint not found at {} (set OMNITOK_TRAINED_DIR)",
        dir.display()
    );
    None
}

/// Both graphs of a checkpoint, float32 as traced.
pub struct Exported {
    pub encoder: ModelProto,
    pub decoder: ModelProto,
    pub clip_frames: usize,
    pub patch: usize,
    pub temporal_patch: usize,
}

/// Traces a `.ckpt` (config from its hyper-parameters).
pub fn export_checkpoint(ckpt: &Path) -> Result<Exported> {
    use omnitok_export::checkpoint;
    use omnitok_export::config::Config;
    use omnitok_export::{Provenance, Source, Weights};
    let ck = checkpoint::load(ckpt, &mut |_, _| {})?;
    let cfg = Config::from_hyper_parameters(ck.hyper_parameters.as_ref().context("no hyper_parameters")?)?;
    let prov = Provenance::Checkpoint {
        file: ckpt.to_path_buf(),
        sha256: ck.sha256.clone(),
    };
    traced(
        &cfg,
        Weights::new(Source::Checkpoint(ck.tensors)),
        omnitok_export::AttentionSemantics::Sdpa,
        &prov,
    )
}

/// Both graphs of `cfg` traced in float32, with the geometry the quality tools need.
fn traced(
    cfg: &omnitok_export::config::Config,
    weights: omnitok_export::Weights,
    attention: omnitok_export::AttentionSemantics,
    prov: &omnitok_export::Provenance,
) -> Result<Exported> {
    let opts = omnitok_export::ExportOptions {
        attention,
        intermediates: false,
    };
    let e = omnitok_export::build(cfg, &weights, opts, prov)?;
    Ok(Exported {
        encoder: e.encoder,
        decoder: e.decoder,
        clip_frames: cfg.clip_frames() as usize,
        patch: cfg.patch_size as usize,
        temporal_patch: cfg.temporal_patch_size as usize,
    })
}

/// Traces preset `name` with seeded random weights.
pub fn export_random(name: &str, seed: u64) -> Result<Exported> {
    use omnitok_export::{Provenance, Source, Weights};
    let p = omnitok_export::preset(name)?;
    let prov = Provenance::Random {
        preset: name.into(),
        seed,
    };
    traced(&p.config(), Weights::new(Source::Random(seed)), p.attention, &prov)
}

/// A CPU session on a model written to `dir/name`.
pub fn session_of(model: &ModelProto, dir: &Path, name: &str) -> Result<Session> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    omnitok_export::onnx::save(model.clone(), &path)?;
    omnitok::session(&path)
}

/// The int8 graphs of `e` under `policy`.
pub fn int8_models(e: &Exported, policy: &Int8Policy) -> Result<(ModelProto, ModelProto)> {
    let (mut enc, mut dec) = (e.encoder.clone(), e.decoder.clone());
    quantize::quantize_pair(&mut enc, &mut dec, policy)?;
    Ok((enc, dec))
}

/// Decoded RGB frames of `video`, scaled to `w` x `h`, at most `max` of them.
pub fn read_video(video: &Path, w: usize, h: usize, max: usize) -> Result<Vec<Vec<u8>>> {
    gst::init()?;
    let desc = format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! videoscale ! \
         video/x-raw,format=RGB,width={w},height={h} ! appsink name=sink sync=false",
        video.display()
    );
    let pipeline = gst::parse::launch(&desc)?.downcast::<gst::Pipeline>().unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing)?;
    let mut frames = Vec::new();
    while frames.len() < max {
        let Ok(sample) = sink.pull_sample() else { break };
        let buffer = sample.buffer().context("sample without buffer")?;
        let map = buffer.map_readable()?;
        let stride = map.len() / h;
        if stride < w * 3 {
            bail!("frame of {} bytes is not {w}x{h} RGB", map.len());
        }
        let mut rgb = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            rgb.extend_from_slice(&map[y * stride..y * stride + w * 3]);
        }
        frames.push(rgb);
    }
    pipeline.set_state(gst::State::Null)?;
    if frames.is_empty() {
        bail!("no frames decoded from {}", video.display());
    }
    Ok(frames)
}

/// A `size` x `size` crop at column `x0` (row 0) of a `w`-wide frame.
pub fn crop(frame: &[u8], w: usize, x0: usize, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size * size * 3);
    for y in 0..size {
        let row = (y * w + x0) * 3;
        out.extend_from_slice(&frame[row..row + size * 3]);
    }
    out
}

/// Inputs of one kind: `clips` of `frames` frames each, `size` x `size`, RGB.
pub struct Set {
    pub name: String,
    pub frames: usize,
    pub size: usize,
    pub clips: Vec<Vec<u8>>,
}

/// Clips of `frames` frames from `video`, scaled to `w` x `size`, cropped at each column of `xs`;
/// consecutive, non-overlapping clips, at most `max_clips` per crop.
pub fn video_set(
    name: &str,
    video: &Path,
    w: usize,
    size: usize,
    xs: &[usize],
    frames: usize,
    max_clips: usize,
) -> Result<Set> {
    let stride = frames;
    let all = read_video(video, w, size, stride * (max_clips - 1) + frames)?;
    let mut clips = Vec::new();
    for &x in xs {
        let mut start = 0;
        while start + frames <= all.len() && clips.len() < max_clips * xs.len() {
            let mut clip = Vec::with_capacity(frames * size * size * 3);
            for f in &all[start..start + frames] {
                clip.extend(crop(f, w, x, size));
            }
            clips.push(clip);
            start += stride;
            if start / stride >= max_clips {
                break;
            }
        }
    }
    Ok(Set {
        name: name.into(),
        frames,
        size,
        clips,
    })
}

/// Single frames (image mode): every `every`-th frame of each video, cropped at each of `xs`.
pub fn still_set(
    name: &str,
    videos: &[(&Path, usize)],
    size: usize,
    xs: &[usize],
    every: usize,
    max_per_video: usize,
) -> Result<Set> {
    let mut clips = Vec::new();
    for &(video, w) in videos {
        let all = read_video(video, w, size, every * max_per_video)?;
        for f in all.iter().step_by(every) {
            for &x in xs {
                if x + size <= w {
                    clips.push(crop(f, w, x, size));
                }
            }
        }
    }
    Ok(Set {
        name: name.into(),
        frames: 1,
        size,
        clips,
    })
}

const BATCH: usize = 8;

/// Tokens `[clips, t, h, w]` of every clip of `set`, flattened per clip.
pub fn encode(enc: &mut Session, set: &Set) -> Result<Vec<Vec<i64>>> {
    let mut out = Vec::new();
    for chunk in set.clips.chunks(BATCH) {
        let mut data = Vec::with_capacity(chunk.len() * chunk[0].len());
        for c in chunk {
            data.extend_from_slice(c);
        }
        let x = ArrayD::from_shape_vec(IxDyn(&[chunk.len(), set.frames, set.size, set.size, 3]), data)?;
        let r = enc.run(ort::inputs!["frames" => Tensor::from_array(x)?])?;
        let t = r["tokens"].try_extract_array::<i64>()?;
        let shape = t.shape().to_vec();
        let per: usize = shape[1..].iter().product();
        let flat: Vec<i64> = t.iter().copied().collect();
        for i in 0..chunk.len() {
            out.push(flat[i * per..(i + 1) * per].to_vec());
        }
    }
    Ok(out)
}

/// Frames (RGB bytes) decoded from tokens, per clip.
pub fn decode(dec: &mut Session, tokens: &[Vec<i64>], grid: [usize; 3]) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for chunk in tokens.chunks(BATCH) {
        let mut data = Vec::new();
        for c in chunk {
            data.extend_from_slice(c);
        }
        let x = ArrayD::from_shape_vec(IxDyn(&[chunk.len(), grid[0], grid[1], grid[2]]), data)?;
        let r = dec.run(ort::inputs!["tokens" => Tensor::from_array(x)?])?;
        let f = r["frames"].try_extract_array::<u8>()?;
        let flat: Vec<u8> = f.iter().copied().collect();
        let per = flat.len() / chunk.len();
        for i in 0..chunk.len() {
            out.push(flat[i * per..(i + 1) * per].to_vec());
        }
    }
    Ok(out)
}

/// PSNR over all bytes of all clips (one MSE for the set).
pub fn psnr(a: &[Vec<u8>], b: &[Vec<u8>]) -> f64 {
    let (mut se, mut n) = (0f64, 0usize);
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len());
        for (&p, &q) in x.iter().zip(y) {
            se += (p as f64 - q as f64).powi(2);
        }
        n += x.len();
    }
    if se == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / (se / n as f64)).log10()
    }
}

/// Fraction of equal tokens.
pub fn agreement(a: &[Vec<i64>], b: &[Vec<i64>]) -> f64 {
    let (mut eq, mut n) = (0usize, 0usize);
    for (x, y) in a.iter().zip(b) {
        eq += x.iter().zip(y).filter(|(p, q)| p == q).count();
        n += x.len();
    }
    eq as f64 / n as f64
}

/// Float32 and int8 sessions of one model.
pub struct Pair {
    pub f32_enc: Session,
    pub f32_dec: Session,
    pub int8_enc: Session,
    pub int8_dec: Session,
}

impl Pair {
    pub fn new(e: &Exported, int8: &(ModelProto, ModelProto), dir: &Path) -> Result<Self> {
        Ok(Pair {
            f32_enc: session_of(&e.encoder, dir, "f32_encoder.onnx")?,
            f32_dec: session_of(&e.decoder, dir, "f32_decoder.onnx")?,
            int8_enc: session_of(&int8.0, dir, "int8_encoder.onnx")?,
            int8_dec: session_of(&int8.1, dir, "int8_decoder.onnx")?,
        })
    }
}

/// The figures of one set.
#[derive(Debug, Clone, Copy)]
pub struct Quality {
    /// int8 encoder tokens equal to float32 encoder tokens.
    pub agreement: f64,
    /// float32 encode + decode against the input.
    pub psnr_f32: f64,
    /// int8 encode + decode against the input.
    pub psnr_int8: f64,
    /// int8 decoder against the float32 decoder, both on the float32 tokens.
    pub psnr_decoder: f64,
}

pub fn grid(e: &Exported, set: &Set) -> [usize; 3] {
    [
        1 + (set.frames - 1) / e.temporal_patch,
        set.size / e.patch,
        set.size / e.patch,
    ]
}

/// Float32 reference of a set: tokens and reconstruction.
pub struct Reference {
    pub tokens: Vec<Vec<i64>>,
    pub recon: Vec<Vec<u8>>,
}

pub fn reference(enc: &mut Session, dec: &mut Session, e: &Exported, set: &Set) -> Result<Reference> {
    let tokens = encode(enc, set)?;
    let recon = decode(dec, &tokens, grid(e, set))?;
    Ok(Reference { tokens, recon })
}

pub fn measure(p: &mut Pair, e: &Exported, set: &Set) -> Result<Quality> {
    let g = grid(e, set);
    let r = reference(&mut p.f32_enc, &mut p.f32_dec, e, set)?;
    let t8 = encode(&mut p.int8_enc, set)?;
    let recon8 = decode(&mut p.int8_dec, &t8, g)?;
    let dec8 = decode(&mut p.int8_dec, &r.tokens, g)?;
    Ok(Quality {
        agreement: agreement(&r.tokens, &t8),
        psnr_f32: psnr(&set.clips, &r.recon),
        psnr_int8: psnr(&set.clips, &recon8),
        psnr_decoder: psnr(&r.recon, &dec8),
    })
}

/// The evaluation sets on the trained checkpoint's size (128x128): bigbuckbunny (content it
/// is competent on), held-out bikes, and stills of both plus carphone. `small` keeps a test cheap.
pub fn trained_sets(clip_frames: usize, small: bool) -> Result<Vec<Set>> {
    let v = |n: &str| omnitok::sample_video(n);
    let (clips, stills) = if small { (4, 4) } else { (12, 12) };
    Ok(vec![
        video_set(
            "bigbuckbunny",
            &v("bigbuckbunny.mp4"),
            228,
            128,
            &[0, 50, 100],
            clip_frames,
            clips,
        )?,
        video_set("bikes", &v("bikes.mp4"), 300, 128, &[0, 86, 172], clip_frames, clips)?,
        still_set(
            "stills",
            &[
                (&v("bigbuckbunny.mp4"), 228),
                (&v("bikes.mp4"), 300),
                (&v("carphone_pristine.mp4"), 156),
            ],
            128,
            &[0, 29, 100, 172],
            10,
            stills,
        )?,
    ])
}
