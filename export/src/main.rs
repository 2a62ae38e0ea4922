//! `omnitok-export --checkpoint FILE --output DIR [--attention sdpa|math] [--intermediates]
//!                [--preset NAME] [--random-init SEED] [--config JSON]
//!                [--triton-repository DIR [--triton-* ...]]`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};

use omnitok_export::checkpoint;
use omnitok_export::config::{AttentionSemantics, Config, PRESETS, preset};
use omnitok_export::half::{self, Precision};
use omnitok_export::quantize::{self, Int8Policy};
use omnitok_export::triton::{self, GraphIo, InstanceKind, TensorRtOptions, TritonOptions};
use omnitok_export::{ExportOptions, Provenance, Source, Weights};

#[derive(Parser, Debug)]
#[command(
    name = "omnitok-export",
    version,
    about = "Trace OmniTokenizer checkpoints into ONNX encoder and decoder graphs, without Python"
)]
struct Args {
    /// Released checkpoint: PyTorch Lightning .ckpt (config read from it) or .safetensors (config from --preset or --config).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["random_init", "list_presets"])]
    checkpoint: Option<PathBuf>,
    /// Output directory; receives encoder.onnx and decoder.onnx.
    #[arg(long, value_name = "DIR", required_unless_present = "list_presets")]
    output: Option<PathBuf>,
    /// Attention semantics: sdpa (every released checkpoint but imagenet_only) or math (imagenet_only).
    /// Default: the preset's, else sdpa.
    #[arg(long, value_name = "sdpa|math")]
    attention: Option<AttentionSemantics>,
    /// Also output pre_quant (encoder) and recon (decoder) float tensors.
    #[arg(long)]
    intermediates: bool,
    /// Config of a released checkpoint (see --list-presets), or tiny for tests.
    #[arg(long, value_name = "NAME")]
    preset: Option<String>,
    /// Build seeded random weights of the preset's config instead of reading a checkpoint.
    #[arg(long, value_name = "SEED", requires = "preset", conflicts_with = "checkpoint")]
    random_init: Option<u64>,
    /// Config JSON (the fields of the official args) for a safetensors checkpoint.
    #[arg(long, value_name = "JSON", conflicts_with = "preset")]
    config: Option<PathBuf>,
    /// Arithmetic of the graphs: f32 (as traced), int8 (weight MatMuls in int8 on ONNX
    /// Runtime's integer kernels; codebook, pre/post_vq_conv, RoPE and attention stay float)
    /// or f16 (GPUs: the stacks in half; normalisation statistics, softmax, L2 norms, RoPE
    /// angles, codebook and pixel heads in float32).
    #[arg(long, value_name = "f32|int8|f16", default_value = "f32")]
    precision: Precision,
    /// With --precision int8: weights kept float, as glob patterns on the state-dict key or node
    /// name (repeatable or comma-separated; 'none' quantizes every candidate). Replaces the default list.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    int8_keep_float: Vec<String>,
    /// With --precision int8: MatMuls whose activation is scaled per row (per token) before
    /// its quantization, as glob patterns like --int8-keep-float ('none': every activation
    /// per tensor). Replaces the default, 'encoder.*'.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    int8_per_row: Vec<String>,
    /// With --precision int8: the largest weight magnitude in int8 steps (default 127, the
    /// full range).
    #[arg(long, value_name = "1-127", value_parser = clap::value_parser!(u8).range(1..=127))]
    int8_weight_max: Option<u8>,
    /// With --precision int8: the largest |q| + |q'| of two weights adjacent along K, the
    /// pairs whose products the AVX2 and AVX-512BW kernels of x86 CPUs without VNNI add in
    /// int16. 'none' (the default) uses the full range: exact as stored on x86 CPUs with
    /// AVX-512 VNNI or AVX-VNNI and on other CPUs; on x86 CPUs without VNNI the elements store
    /// the weights as uint8 at load, for exact but slower kernels. 128 keeps the graph exact
    /// as stored on every CPU (fast there too) for 0.3-0.6 points of token agreement.
    #[arg(long, value_name = "2-254|none", value_parser = parse_pair_max)]
    int8_pair_max: Option<PairMax>,
    /// With --precision int8: per-row MatMuls whose activation is quantized in two steps (a
    /// byte, then its rounding residual's byte: two integer products), as glob patterns like
    /// --int8-keep-float. Replaces the default, 'encoder.*.3.4.weight' (the encoder's
    /// feed-forward outputs: 98% of tokens equal to float32's on the trained test checkpoint);
    /// 'none' gives every activation one byte: about 15% faster encoding, 97.4-97.8% of tokens.
    #[arg(long, value_name = "PATTERN", value_delimiter = ',')]
    int8_two_step: Vec<String>,
    /// Also write a Triton Inference Server model repository there: NAME_encoder and
    /// NAME_decoder, each with config.pbtxt (platform onnxruntime_onnx) and 1/model.onnx.
    #[arg(long, value_name = "DIR")]
    triton_repository: Option<PathBuf>,
    /// Model name prefix in the Triton repository.
    #[arg(long, value_name = "NAME", default_value = "omnitok", requires = "triton_repository")]
    triton_name: String,
    /// Triton max_batch_size (chunks per server run, across requests).
    #[arg(long, value_name = "N", default_value_t = 64, requires = "triton_repository")]
    triton_max_batch: u32,
    /// Triton dynamic batching: how long a request waits for others to batch with.
    #[arg(
        long,
        value_name = "MICROSECONDS",
        default_value_t = 2000,
        requires = "triton_repository"
    )]
    triton_queue_delay_us: u32,
    /// Model instances (per GPU with --triton-kind gpu).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "triton_repository")]
    triton_instances: u32,
    /// Where Triton runs the instances.
    #[arg(long, value_enum, default_value = "gpu", requires = "triton_repository")]
    triton_kind: InstanceKind,
    /// Run through ONNX Runtime's TensorRT execution provider inside Triton.
    #[arg(long, requires = "triton_repository")]
    triton_tensorrt: bool,
    /// TensorRT in FP16 (precision_mode FP16).
    #[arg(long, requires = "triton_tensorrt")]
    triton_fp16: bool,
    /// TensorRT engine cache folder, as the server sees it.
    #[arg(long, value_name = "PATH", requires = "triton_tensorrt")]
    triton_engine_cache: Option<String>,
    /// One TensorRT optimization profile for clips of FRAMESxHEIGHTxWIDTH (padded), batch 1 to
    /// --triton-max-batch.
    #[arg(long, value_name = "FxHxW", requires = "triton_tensorrt")]
    triton_trt_profile: Option<String>,
    /// Print the presets and exit.
    #[arg(long)]
    list_presets: bool,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

/// `--int8-pair-max`: a bound, or `none`.
#[derive(Debug, Clone, Copy)]
struct PairMax(Option<u16>);

fn parse_pair_max(s: &str) -> Result<PairMax, String> {
    if s == "none" {
        return Ok(PairMax(None));
    }
    match s.parse::<u16>() {
        Ok(p) if quantize::PAIR_MAX_RANGE.contains(&p) => Ok(PairMax(Some(p))),
        _ => Err(format!("'{s}': expected 2 to 254, or none")),
    }
}

fn progress_bar(quiet: bool, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(0);
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec})")
            .unwrap()
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

fn run(args: Args) -> Result<()> {
    if args.list_presets {
        for p in PRESETS {
            println!("{:<18} {:<5} {}", p.name, p.attention.as_str(), p.description);
        }
        return Ok(());
    }
    if args.precision != Precision::Int8 {
        for (given, flag) in [
            (!args.int8_keep_float.is_empty(), "--int8-keep-float"),
            (!args.int8_per_row.is_empty(), "--int8-per-row"),
            (args.int8_weight_max.is_some(), "--int8-weight-max"),
            (args.int8_pair_max.is_some(), "--int8-pair-max"),
            (!args.int8_two_step.is_empty(), "--int8-two-step"),
        ] {
            if given {
                bail!("{flag} needs --precision int8");
            }
        }
    }
    let triton_opts = args
        .triton_repository
        .is_some()
        .then(|| triton_options(&args))
        .transpose()?;
    let started = Instant::now();
    let output = args.output.clone().expect("clap requires --output");
    let named = args.preset.as_deref().map(preset).transpose()?;

    let (cfg, source, provenance) = match (&args.checkpoint, args.random_init) {
        (None, Some(seed)) => {
            let p = named.expect("clap requires --preset with --random-init");
            (
                p.config(),
                Source::Random(seed),
                Provenance::Random {
                    preset: p.name.to_string(),
                    seed,
                },
            )
        }
        (Some(path), None) => {
            let pb = progress_bar(args.quiet, "reading");
            let ck = checkpoint::load(path, &mut |done, total| {
                pb.set_length(total);
                pb.set_position(done);
            })?;
            pb.finish_and_clear();
            let cfg = match (&ck.hyper_parameters, named, &args.config) {
                (_, _, Some(json)) => {
                    let text = std::fs::read_to_string(json)
                        .with_context(|| format!("cannot read config {}", json.display()))?;
                    let c: Config = serde_json::from_str(&text)
                        .with_context(|| format!("{}: not a valid omnitok config", json.display()))?;
                    c
                }
                (_, Some(p), None) => p.config(),
                (Some(hp), None, None) => Config::from_hyper_parameters(hp)
                    .with_context(|| format!("{}: reading hyper_parameters", path.display()))?,
                (None, None, None) => match ck.format {
                    checkpoint::Format::Safetensors => bail!(
                        "{}: a safetensors file carries no config; pass --preset NAME or --config JSON",
                        path.display()
                    ),
                    checkpoint::Format::Torch => bail!(
                        "{}: this .ckpt has no hyper_parameters (Lightning saves them; a bare state dict \
                         lacks them), so it carries no config; pass --preset NAME or --config JSON",
                        path.display()
                    ),
                },
            };
            let prov = Provenance::Checkpoint {
                file: path.clone(),
                sha256: ck.sha256.clone(),
            };
            (cfg, Source::Checkpoint(ck.tensors), prov)
        }
        _ => unreachable!("clap enforces --checkpoint xor --random-init"),
    };
    let attention = args
        .attention
        .or(named.map(|p| p.attention))
        .unwrap_or(AttentionSemantics::Sdpa);
    let weights = Weights::new(source);
    let opts = ExportOptions {
        attention,
        intermediates: args.intermediates,
    };
    let mut exported =
        omnitok_export::build(&cfg, &weights, opts, &provenance).map_err(|e| match &args.checkpoint {
            Some(p) => e.context(format!("{}", p.display())),
            None => e,
        })?;
    let f16 = match args.precision {
        Precision::F16 => Some(half::to_half_pair(&mut exported.encoder, &mut exported.decoder)?),
        _ => None,
    };
    let int8 = match args.precision {
        Precision::F32 | Precision::F16 => None,
        Precision::Int8 => {
            let mut policy = Int8Policy::default()
                .replacing_keep_float(&args.int8_keep_float)
                .with_per_row(&args.int8_per_row)
                .with_two_step(&args.int8_two_step);
            if let Some(m) = args.int8_weight_max {
                policy.weight_max = m;
            }
            if let Some(PairMax(p)) = args.int8_pair_max {
                policy.pair_max = p;
            }
            let r = quantize::quantize_pair(&mut exported.encoder, &mut exported.decoder, &policy)?;
            Some((policy, r))
        }
    };
    let (params, unused, id) = (exported.parameters, exported.unused.clone(), exported.model_id.clone());
    let triton = match (&args.triton_repository, triton_opts) {
        (Some(dir), Some(opts)) => Some((
            dir.clone(),
            opts,
            [GraphIo::of(&exported.encoder)?, GraphIo::of(&exported.decoder)?],
        )),
        _ => None,
    };
    let traced = started.elapsed();
    let reports = omnitok_export::write(exported, &output)?;

    let kind = if cfg.use_vae { "VAE" } else { "VQ" };
    println!("omnitok-export: {}", provenance.describe());
    println!(
        "  model     {kind}, {} wide, {} heads x {}, patch {}x{}x{}, enc '{}' dec '{}' + {} temporal, window {}, {:?} positions, {} attention",
        cfg.embedding_dim,
        cfg.heads,
        cfg.dim_head,
        cfg.temporal_patch_size,
        cfg.patch_size,
        cfg.patch_size,
        cfg.enc_block,
        cfg.dec_block,
        cfg.temporal_depth,
        cfg.twod_window_size,
        cfg.spatial_pos,
        attention.as_str()
    );
    if cfg.use_vae {
        println!("  latent    {} channels", cfg.codebook_dim);
    } else {
        println!("  codebook  {} codes x {}", cfg.n_codes, cfg.codebook_dim);
    }
    println!("  params    {:.2} M ({params})", params as f64 / 1e6);
    match (&int8, &f16) {
        (None, None) => println!("  precision f32"),
        (None, Some([e, d])) => println!(
            "  precision f16: {} nodes half, {} float32, {} casts",
            e.half_nodes + d.half_nodes,
            e.float_nodes + d.float_nodes,
            e.casts + d.casts
        ),
        (Some((policy, r)), _) => {
            let (q, k) = (
                r.encoder.quantized.len() + r.decoder.quantized.len(),
                r.encoder.kept_float.len() + r.decoder.kept_float.len(),
            );
            println!(
                "  precision int8: {q} weight MatMuls int8 ({}, |q| <= {}{}, exact {}, {} shared activation quantizations, {} per row, {} rescales carried, {} cancelled by a normalisation, {} in two steps), {k} kept float{}",
                policy.granularity.as_str(),
                policy.weight_max,
                match policy.pair_max {
                    Some(p) => format!(", pairs along K <= {p}"),
                    None => String::new(),
                },
                if policy.cpu() == "any" {
                    "as stored on every CPU"
                } else {
                    "as stored on x86 VNNI and non-x86 CPUs, as uint8 weights at load on other x86 CPUs"
                },
                r.encoder.shared_quantizations + r.decoder.shared_quantizations,
                r.encoder.per_row + r.decoder.per_row,
                r.encoder.carried_row_scales + r.decoder.carried_row_scales,
                r.encoder.cancelled_row_scales + r.decoder.cancelled_row_scales,
                r.encoder.two_step + r.decoder.two_step,
                if policy.keep_float.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", policy.keep_float.join(", "))
                }
            );
        }
    }
    println!("  model id  {id}");
    for r in &reports {
        let extra = r
            .data_path
            .as_ref()
            .map(|p| format!(" + {} ({:.1} MB)", p.display(), r.data_bytes as f64 / 1e6))
            .unwrap_or_default();
        println!(
            "  wrote     {} ({:.1} MB){extra}",
            r.model_path.display(),
            r.model_bytes as f64 / 1e6
        );
    }
    if let Some((dir, opts, [enc, dec])) = triton {
        let folders = triton::write_repository(&dir, &opts, &[(enc, &reports[0]), (dec, &reports[1])])
            .with_context(|| format!("writing the Triton repository {}", dir.display()))?;
        for f in folders {
            println!("  triton    {}", f.display());
        }
    }
    if !unused.is_empty() {
        println!(
            "  note      {} checkpoint tensors not used by inference: {}",
            unused.len(),
            unused.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        );
    }
    println!(
        "  time      {:.2} s (trace {:.2} s)",
        started.elapsed().as_secs_f64(),
        traced.as_secs_f64()
    );
    Ok(())
}

fn triton_options(args: &Args) -> Result<TritonOptions> {
    let profile = match &args.triton_trt_profile {
        None => None,
        Some(text) => {
            let v: Vec<u32> = text
                .split('x')
                .map(|p| p.trim().parse())
                .collect::<Result<_, _>>()
                .map_err(|_| {
                    anyhow::anyhow!("--triton-trt-profile '{text}': expected FRAMESxHEIGHTxWIDTH, e.g. 17x256x256")
                })?;
            match v[..] {
                [f, h, w] => Some([f, h, w]),
                _ => bail!("--triton-trt-profile '{text}': expected FRAMESxHEIGHTxWIDTH, e.g. 17x256x256"),
            }
        }
    };
    let opts = TritonOptions {
        name: args.triton_name.clone(),
        max_batch_size: args.triton_max_batch,
        queue_delay_us: args.triton_queue_delay_us,
        instances: args.triton_instances,
        kind: args.triton_kind,
        tensorrt: args.triton_tensorrt.then(|| TensorRtOptions {
            fp16: args.triton_fp16,
            engine_cache: args.triton_engine_cache.clone(),
            workspace_bytes: 4 << 30,
            profile,
        }),
    };
    opts.validate()?;
    Ok(opts)
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("omnitok-export: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
