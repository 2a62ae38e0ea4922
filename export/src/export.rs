//! From a config and weights to the two ONNX models, with their metadata.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::config::{AttentionSemantics, Config};
use crate::graph::Graph;
use crate::model::{Ctx, decoder::Decoder, encoder::Encoder};
use crate::onnx::{self, ModelProto, SaveReport};
use crate::weights::Weights;

/// Bumped when the graphs' inputs, outputs or metadata change meaning.
pub const GRAPH_CONTRACT_VERSION: &str = "1";
pub const IR_VERSION: i64 = 11;
pub const OPSET: i64 = 23;

#[derive(Debug, Clone, Copy)]
pub struct ExportOptions {
    pub attention: AttentionSemantics,
    pub intermediates: bool,
}

/// Where the weights came from, recorded in the metadata.
#[derive(Debug, Clone)]
pub enum Provenance {
    Checkpoint { file: PathBuf, sha256: String },
    Random { preset: String, seed: u64 },
}

impl Provenance {
    pub fn describe(&self) -> String {
        match self {
            Provenance::Checkpoint { file, sha256 } => {
                format!(
                    "checkpoint {} sha256:{sha256}",
                    file.file_name()
                        .map(|f| f.to_string_lossy().into_owned())
                        .unwrap_or_default()
                )
            }
            Provenance::Random { preset, seed } => {
                format!("preset {preset} random-init seed {seed}")
            }
        }
    }
}

pub struct Exported {
    pub encoder: ModelProto,
    pub decoder: ModelProto,
    pub model_id: String,
    pub parameters: usize,
    pub unused: Vec<String>,
}

/// The identity the token stream carries: sha256 over the config, the attention semantics
/// and the weights that give tokens their meaning (the codebook; for a VAE, `post_vq_conv`).
pub fn model_id(cfg: &Config, attention: AttentionSemantics, weights: &Weights) -> Result<String> {
    let mut h = Sha256::new();
    h.update(b"omnitok-model-id/1\0");
    h.update(serde_json::to_string(cfg)?.as_bytes());
    h.update(attention.as_str().as_bytes());
    let keys: Vec<(&str, Vec<usize>)> = if cfg.use_vae {
        let (c, d) = (cfg.codebook_dim as usize, cfg.embedding_dim as usize);
        vec![
            ("post_vq_conv.1.weight", vec![d, c]),
            ("post_vq_conv.1.bias", vec![d]),
        ]
    } else {
        vec![(
            "codebook.embeddings",
            vec![cfg.n_codes as usize, cfg.codebook_dim as usize],
        )]
    };
    for (k, shape) in keys {
        for v in weights.get(k, &shape)?.iter() {
            h.update(v.to_le_bytes());
        }
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn finish(
    graph: Graph,
    name: &str,
    role: &str,
    cfg: &Config,
    opts: &ExportOptions,
    provenance: &Provenance,
    id: &str,
) -> Result<ModelProto> {
    let mut opsets = vec![("", OPSET)];
    if graph.uses_ms_domain {
        opsets.push(("com.microsoft", 1));
    }
    let mut gp = onnx::GraphProto::new(name);
    gp.node = graph.nodes;
    gp.initializer = graph.initializers;
    gp.input = graph.inputs;
    gp.output = graph.outputs;
    let mut m = ModelProto::new(IR_VERSION, &opsets, gp)
        .with_producer("omnitok-export", env!("CARGO_PKG_VERSION"));
    m.set_metadata("omnitok.role", role);
    m.set_metadata("omnitok.kind", if cfg.use_vae { "vae" } else { "vq" });
    m.set_metadata("omnitok.config", serde_json::to_string(cfg)?);
    m.set_metadata("omnitok.attention", opts.attention.as_str());
    m.set_metadata("omnitok.source", provenance.describe());
    m.set_metadata("omnitok.model_id", id);
    m.set_metadata(
        "omnitok.intermediates",
        if opts.intermediates { "true" } else { "false" },
    );
    m.set_metadata("omnitok.contract", GRAPH_CONTRACT_VERSION);
    m.set_metadata("omnitok.exporter_version", env!("CARGO_PKG_VERSION"));
    Ok(m)
}

/// Traces both graphs.
pub fn build(
    cfg: &Config,
    weights: &Weights,
    opts: ExportOptions,
    provenance: &Provenance,
) -> Result<Exported> {
    cfg.validate()?;
    let id = model_id(cfg, opts.attention, weights)?;
    let mut g = Graph::new();
    let mut cx = Ctx {
        g: &mut g,
        w: weights,
        cfg,
        semantics: opts.attention,
    };
    let enc = Encoder::load(&mut cx).context("loading the encoder weights")?;
    enc.trace(&mut cx, opts.intermediates)
        .context("tracing the encoder")?;
    let encoder = finish(g, "omnitok_encoder", "encoder", cfg, &opts, provenance, &id)?;

    let mut g = Graph::new();
    let mut cx = Ctx {
        g: &mut g,
        w: weights,
        cfg,
        semantics: opts.attention,
    };
    let dec = Decoder::load(&mut cx).context("loading the decoder weights")?;
    dec.trace(&mut cx, opts.intermediates)
        .context("tracing the decoder")?;
    let decoder = finish(g, "omnitok_decoder", "decoder", cfg, &opts, provenance, &id)?;

    Ok(Exported {
        encoder,
        decoder,
        model_id: id,
        parameters: weights.parameter_count(),
        unused: weights.unused(),
    })
}

/// Writes `encoder.onnx` and `decoder.onnx` into `dir` (created if needed).
pub fn write(exported: Exported, dir: &Path) -> Result<[SaveReport; 2]> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let e = onnx::save(exported.encoder, &dir.join("encoder.onnx"))?;
    let d = onnx::save(exported.decoder, &dir.join("decoder.onnx"))?;
    Ok([e, d])
}
