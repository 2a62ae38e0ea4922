//! Bits per token of the token codings (docs/FORMAT.md section 5.4) on real token streams:
//! the trained checkpoint (`OMNITOK_TRAINED_DIR`, default ../shared/trained) on held-out
//! bikes.mp4 and on the training video bigbuckbunny.mp4 at its size (128x128), and the
//! released config (imagenet_k600) with random weights at 256x256. For each: u16, packed,
//! coded (the format's coder, exact round trip checked), `zstd -19` and `xz -9` of the u16
//! stream, the order-0 entropy of the whole stream (a static model that no self-contained
//! chunk can have), candidate context schemes (ideal code length of adaptive binary models,
//! `--schemes`), and the coder's encode / decode time per chunk against the model's.
//!
//! cargo run --release --example token_coding -- [--clips N] [--no-released] [--schemes]
//!
//! `--transcode IN OUT CODING` instead rewrites the token file IN with token coding CODING
//! (u16, packed, coded) to OUT, every segment, checking that the tokens come back exactly.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use gstomnitok::format::coding;

#[path = "../tests/support/quality.rs"]
mod quality;
use quality::*;

/// One measured stream: its chunks' tokens and grid.
struct Stream {
    name: String,
    grid: [usize; 3],
    n_codes: u32,
    chunks: Vec<Vec<u32>>,
    model_ms_per_chunk: f64,
}

fn tokens_of(e: &Exported, set: &Set, n_codes: u32, dir: &std::path::Path) -> Result<Stream> {
    let mut enc = session_of(&e.encoder, dir, "enc.onnx")?;
    encode(
        &mut enc,
        &Set {
            clips: set.clips[..1].to_vec(),
            ..clone_set(set)
        },
    )?; // warm-up
    let t0 = Instant::now();
    let tokens = encode(&mut enc, set)?;
    let model_ms_per_chunk = t0.elapsed().as_secs_f64() * 1e3 / tokens.len() as f64;
    let g = grid(e, set);
    let chunks = tokens
        .iter()
        .map(|c| c.iter().map(|&t| u32::try_from(t).context("negative token")).collect())
        .collect::<Result<Vec<Vec<u32>>>>()?;
    Ok(Stream {
        name: set.name.clone(),
        grid: g,
        n_codes,
        chunks,
        model_ms_per_chunk,
    })
}

fn clone_set(s: &Set) -> Set {
    Set {
        name: s.name.clone(),
        frames: s.frames,
        size: s.size,
        clips: Vec::new(),
    }
}

/// Compressed size in bytes of `data` through `cmd args` (stdin to stdout).
fn external(cmd: &str, args: &[&str], data: &[u8]) -> Result<usize> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {cmd} (apt package zstd / xz-utils)"))?;
    let mut stdin = child.stdin.take().unwrap();
    let owned = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&owned));
    let out = child.wait_with_output()?;
    writer.join().unwrap()?;
    if !out.status.success() {
        bail!("{cmd} failed: {}", out.status);
    }
    Ok(out.stdout.len())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Order-0 entropy in bits per token of the whole stream (static, not self-contained).
fn entropy0(s: &Stream) -> f64 {
    let mut h = std::collections::HashMap::<u32, u64>::new();
    let mut n = 0u64;
    for c in &s.chunks {
        for &t in c {
            *h.entry(t).or_default() += 1;
            n += 1;
        }
    }
    h.values()
        .map(|&k| {
            let p = k as f64 / n as f64;
            -p * p.log2()
        })
        .sum()
}

/// Fractions of tokens equal to their previous temporal slot, left and up neighbour (of the
/// tokens that have that neighbour), and to any of them.
fn neighbour_matches(s: &Stream) -> [f64; 4] {
    let [gt, gh, gw] = s.grid;
    let (mut hit, mut have) = ([0u64; 4], [0u64; 4]);
    for c in &s.chunks {
        for t in 0..gt {
            for y in 0..gh {
                for x in 0..gw {
                    let i = (t * gh + y) * gw + x;
                    let nb = [
                        (t > 0).then(|| c[i - gh * gw]),
                        (x > 0).then(|| c[i - 1]),
                        (y > 0).then(|| c[i - gw]),
                    ];
                    for (k, n) in nb.iter().enumerate() {
                        if let Some(v) = n {
                            have[k] += 1;
                            hit[k] += u64::from(*v == c[i]);
                        }
                    }
                    have[3] += 1;
                    hit[3] += u64::from(nb.contains(&Some(c[i])));
                }
            }
        }
    }
    std::array::from_fn(|k| hit[k] as f64 / have[k].max(1) as f64)
}

fn report(s: &Stream, schemes: bool) -> Result<()> {
    let [gt, gh, gw] = s.grid;
    let per = gt * gh * gw;
    let n: usize = s.chunks.iter().map(Vec::len).sum();
    let bits = coding::index_bits(s.n_codes);
    let mut u16_stream = Vec::with_capacity(2 * n);
    for c in &s.chunks {
        for &t in c {
            u16_stream.extend_from_slice(&(t as u16).to_le_bytes());
        }
    }
    // the format's coder: size, exact round trip, time per chunk
    let (mut coded_bytes, mut range_coded) = (0usize, 0usize);
    let (mut enc_us, mut dec_us) = (Vec::new(), Vec::new());
    for c in &s.chunks {
        let t0 = Instant::now();
        let bytes = coding::encode_coded(c, s.grid, s.n_codes);
        enc_us.push(t0.elapsed().as_secs_f64() * 1e6);
        let t1 = Instant::now();
        let back = coding::decode_coded(&bytes, s.grid, s.n_codes)?;
        dec_us.push(t1.elapsed().as_secs_f64() * 1e6);
        if &back != c {
            bail!("{}: coded round trip differs", s.name);
        }
        let packed = coding::pack(c, s.n_codes);
        if coding::unpack(&packed, c.len(), s.n_codes)? != *c {
            bail!("{}: packed round trip differs", s.name);
        }
        coded_bytes += bytes.len();
        range_coded += usize::from(bytes[0] == 0);
    }
    let zstd = external("zstd", &["-19", "-c", "-q"], &u16_stream)?;
    let xz = external("xz", &["-9", "-c"], &u16_stream)?;
    let packed_bytes: usize = s.chunks.len() * (per * bits as usize).div_ceil(8);
    let bpt = |bytes: usize| bytes as f64 * 8.0 / n as f64;
    println!(
        "{}: {} chunks of {gt}x{gh}x{gw} = {per} tokens, codebook {} ({} bits), {} tokens",
        s.name,
        s.chunks.len(),
        s.n_codes,
        bits,
        n
    );
    println!("  {:<34} {:>8} {:>8}", "coding", "bits/tok", "x packed");
    let line = |name: &str, b: f64| println!("  {name:<34} {b:>8.3} {:>8.3}", b / bits as f64);
    line("u16 (payload 1)", 16.0);
    line("packed", bpt(packed_bytes));
    line("coded (per chunk, self-contained)", bpt(coded_bytes));
    println!(
        "    ({range_coded} of {} chunks range-coded, the others packed: mode byte 1)",
        s.chunks.len()
    );
    line("zstd -19 of the u16 stream", bpt(zstd));
    line("xz -9 of the u16 stream", bpt(xz));
    line("order-0 entropy of whole stream", entropy0(s));
    let m = neighbour_matches(s);
    println!(
        "  tokens equal to their previous temporal slot {:.1}%, left {:.1}%, up {:.1}%, any of them {:.1}%",
        100.0 * m[0],
        100.0 * m[1],
        100.0 * m[2],
        100.0 * m[3]
    );
    let (em, dm) = (median(&mut enc_us), median(&mut dec_us));
    println!(
        "  coder per chunk: encode median {em:.1} us, decode median {dm:.1} us; model encoder {:.1} ms per chunk -> coder {:.3}% / {:.3}% of the model's time",
        s.model_ms_per_chunk,
        100.0 * em / (s.model_ms_per_chunk * 1e3),
        100.0 * dm / (s.model_ms_per_chunk * 1e3)
    );
    if schemes {
        for (name, scheme) in coding::SCHEMES {
            let bytes: usize = s
                .chunks
                .iter()
                .map(|c| coding::encode_with(c, s.grid, s.n_codes, scheme).len())
                .sum();
            line(&format!("scheme: {name}"), bpt(bytes));
        }
    }
    Ok(())
}

/// Rewrites a token file in another token coding (tokens checked to come back exactly).
fn transcode(input: &str, output: &str, coding: &str) -> Result<()> {
    use gstomnitok::format::{ChunkRecord, Item, StreamReader, TokenCoding};
    let coding = TokenCoding::from_name(coding).with_context(|| format!("unknown coding {coding}"))?;
    let bytes = std::fs::read(input).with_context(|| format!("reading {input}"))?;
    let mut r = StreamReader::new();
    r.push(&bytes);
    let (mut out, mut header) = (Vec::new(), None);
    while let Some(item) = r
        .next_item()
        .with_context(|| format!("{input}: corrupt token stream"))?
    {
        match item {
            Item::Header(mut h, _) => {
                if h.payload_type.is_tokens() {
                    h.token_coding = coding;
                }
                out.extend(h.try_encode()?);
                header = Some(h);
            }
            Item::Chunk(c, _) => {
                let h = header.as_ref().context("chunk before header")?;
                let rec = c.encode(h)?;
                if ChunkRecord::decode(&rec, h)?.0 != c {
                    bail!("{input}: chunk does not round-trip");
                }
                out.extend(rec);
            }
        }
    }
    r.finish().with_context(|| format!("{input}: truncated token stream"))?;
    std::fs::write(output, &out).with_context(|| format!("writing {output}"))?;
    println!(
        "{input} ({} bytes) -> {output} ({} bytes, {})",
        bytes.len(),
        out.len(),
        coding.name()
    );
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = args.iter().position(|a| a == "--transcode") {
        let get = |k: usize| args.get(i + k).map(String::as_str).context("--transcode IN OUT CODING");
        return transcode(get(1)?, get(2)?, get(3)?);
    }
    let has = |f: &str| args.iter().any(|a| a == f);
    let value = |f: &str| args.iter().position(|a| a == f).and_then(|i| args.get(i + 1)).cloned();
    let clips: usize = value("--clips").map(|v| v.parse()).transpose()?.unwrap_or(24);
    omnitok::init_ort();
    let dir = omnitok::scratch_dir(&format!("token_coding-{}", std::process::id()));
    let v = omnitok::sample_video;
    if let Some(trained) = trained_dir() {
        let e = export_checkpoint(&trained.join("trained_vq.ckpt"))?;
        println!(
            "trained checkpoint ({}), {}-frame chunks of 128x128\n",
            trained.display(),
            e.clip_frames
        );
        for name in ["bikes", "bigbuckbunny"] {
            let set = video_set(name, &v(&format!("{name}.mp4")), 128, 128, &[0], e.clip_frames, clips)?;
            let s = tokens_of(&e, &set, 1024, &dir)?;
            report(&s, has("--schemes"))?;
            println!();
        }
    }
    if !has("--no-released") {
        let e = export_random("imagenet_k600", 7)?;
        let set = video_set(
            "bikes (released config, random weights)",
            &v("bikes.mp4"),
            256,
            256,
            &[0],
            e.clip_frames,
            2,
        )?;
        let s = tokens_of(&e, &set, 8192, &dir)?;
        report(&s, has("--schemes"))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
