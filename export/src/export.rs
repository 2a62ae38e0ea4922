//! From a config and weights to the two ONNX models, with their metadata.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use crate::config::{AttentionSemantics, Config};
use crate::graph::Graph;
use crate::model::{Ctx, vqgan};
use crate::onnx::{self, ModelProto, SaveReport};
use crate::weights::Weights;

/// Bumped when the graphs' inputs, outputs or metadata change meaning.
pub const GRAPH_CONTRACT_VERSION: &str = "2";
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

/// The config JSON the graphs carry (`omnitok.config`): the hyper-parameters plus the
/// attention semantics, which change what the encoder computes.
pub fn config_json(cfg: &Config, attention: AttentionSemantics) -> Result<String> {
    let mut v = serde_json::to_value(cfg)?;
    v["attention"] = serde_json::Value::String(attention.as_str().into());
    Ok(serde_json::to_string(&v)?)
}

/// The model identity the token stream carries (docs/FORMAT.md, section 8): SHA-256 over
/// a tag, the length-prefixed config JSON and the length-prefixed values that give tokens
/// their meaning: the codebook (VQ) or `post_vq_conv`'s weight and bias (VAE).
pub fn model_identity(config_json: &str, codebook: &[f32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"omnitok-model-identity-v1\0");
    h.update((config_json.len() as u64).to_le_bytes());
    h.update(config_json.as_bytes());
    h.update((codebook.len() as u64).to_le_bytes());
    for v in codebook {
        h.update(v.to_le_bytes());
    }
    h.finalize().into()
}

fn model_id(cfg: &Config, config_json: &str, weights: &Weights) -> Result<String> {
    let values: Vec<f32> = if cfg.use_vae {
        let (c, d) = (cfg.codebook_dim as usize, cfg.embedding_dim as usize);
        let mut v = weights.get("post_vq_conv.1.weight", &[d, c])?.into_owned();
        v.extend_from_slice(&weights.get("post_vq_conv.1.bias", &[d])?);
        v
    } else {
        weights
            .get(
                "codebook.embeddings",
                &[cfg.n_codes as usize, cfg.codebook_dim as usize],
            )?
            .into_owned()
    };
    Ok(model_identity(config_json, &values)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// What both graphs record about the model.
struct ModelMeta<'a> {
    cfg: &'a Config,
    config_json: &'a str,
    opts: &'a ExportOptions,
    provenance: &'a Provenance,
    id: &'a str,
}

fn finish(graph: Graph, name: &str, role: &str, meta: &ModelMeta) -> Result<ModelProto> {
    let ModelMeta {
        cfg,
        config_json,
        opts,
        provenance,
        id,
    } = *meta;
    let mut m = graph.into_model(name);
    m.set_metadata("omnitok.role", role);
    m.set_metadata("omnitok.kind", if cfg.use_vae { "vae" } else { "vq" });
    m.set_metadata("omnitok.config", config_json);
    m.set_metadata("omnitok.geometry", geometry_json(cfg));
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

/// The geometry rules the elements apply (`omnitok.geometry`, docs/GRAPHS.md): frame sizes
/// are multiples of `size_multiple`; a clip has 1 + k * `temporal_patch` frames, `clip_frames`
/// by default; its grid is `[1 + (frames - 1) / temporal_patch, height / patch, width / patch]`.
pub fn geometry_json(cfg: &Config) -> String {
    serde_json::json!({
        "size_multiple": cfg.size_multiple(),
        "patch": cfg.patch_size,
        "temporal_patch": cfg.temporal_patch_size,
        "clip_frames": cfg.clip_frames(),
        "channels": cfg.latent_channels(),
        "codebook_size": cfg.n_codes,
        "grid": "t = 1 + (frames - 1) / temporal_patch, h = height / patch, w = width / patch",
    })
    .to_string()
}

/// Traces both graphs.
pub fn build(cfg: &Config, weights: &Weights, opts: ExportOptions, provenance: &Provenance) -> Result<Exported> {
    cfg.validate()?;
    let config_json = config_json(cfg, opts.attention)?;
    let id = model_id(cfg, &config_json, weights)?;
    let meta = ModelMeta {
        cfg,
        config_json: &config_json,
        opts: &opts,
        provenance,
        id: &id,
    };
    let trace = |what: &str, f: &dyn Fn(&mut Ctx) -> Result<()>| -> Result<Graph> {
        let mut g = Graph::new();
        let mut cx = Ctx {
            g: &mut g,
            w: weights,
            cfg,
            semantics: opts.attention,
        };
        f(&mut cx).with_context(|| format!("tracing the {what}"))?;
        Ok(g)
    };
    let g = trace("encoder", &|cx| vqgan::trace_encode(cx, opts.intermediates))?;
    let encoder = finish(g, "omnitok_encoder", "encoder", &meta)?;
    let g = trace("decoder", &|cx| vqgan::trace_decode(cx, opts.intermediates))?;
    let decoder = finish(g, "omnitok_decoder", "decoder", &meta)?;

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
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create output directory {}", dir.display()))?;
    let e = onnx::save(exported.encoder, &dir.join("encoder.onnx"))?;
    let d = onnx::save(exported.decoder, &dir.join("decoder.onnx"))?;
    Ok([e, d])
}

/// Exports preset `name` with seeded random weights into `dir` (tests, benchmarks, demos).
pub fn write_random_preset(name: &str, seed: u64, intermediates: bool, dir: &Path) -> Result<[SaveReport; 2]> {
    let p = crate::config::preset(name)?;
    let weights = Weights::new(crate::weights::Source::Random(seed));
    let opts = ExportOptions {
        attention: p.attention,
        intermediates,
    };
    let provenance = Provenance::Random {
        preset: name.into(),
        seed,
    };
    write(build(&p.config(), &weights, opts, &provenance)?, dir)
}

#[cfg(test)]
mod tests {
    use super::model_identity;

    fn hex(id: [u8; 32]) -> String {
        id.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn model_identity_matches_the_format_spec_vectors() {
        assert_eq!(
            hex(model_identity("{\"a\":1}", &[0.0, 1.0, -2.5])),
            "6e9079bb2fedb4f18b92597086e7d226228340243625f92ac542469fdb04c08e"
        );
        assert_eq!(
            hex(model_identity("", &[])),
            "59085a922c47d57dc762d87fc738576a28b2b4d7c7acd0d84b6b679e8fd8e26d"
        );
    }
}
