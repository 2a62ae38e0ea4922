//! The OmniTokenizer hyper-parameters, read from a checkpoint's saved `args` (with the
//! official defaults for absent fields and the released `casual_` spelling), from a
//! config JSON, or from a preset named after a released checkpoint file.

use std::collections::BTreeMap;

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};

use crate::checkpoint::HyperValue;

/// How the spatial `t` blocks encode position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpatialPos {
    /// Relative-position MLP bias (`ContinuousPositionBias`).
    Rel,
    /// 2-D rotary embedding.
    Rope,
}

/// Which branch of the official `Attention.forward` the checkpoint was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionSemantics {
    /// `F.scaled_dot_product_attention`: the rel-position bias is computed but not applied,
    /// causal attention is a plain causal mask. Every released checkpoint but `imagenet_only`.
    Sdpa,
    /// The explicit einsum branch: rel-position bias added to the logits, ALiBi before the
    /// causal mask. The `imagenet_only` checkpoint.
    Math,
}

impl std::str::FromStr for AttentionSemantics {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sdpa" => Ok(Self::Sdpa),
            "math" => Ok(Self::Math),
            _ => bail!("unknown attention semantics '{s}' (expected sdpa or math)"),
        }
    }
}

impl AttentionSemantics {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sdpa => "sdpa",
            Self::Math => "math",
        }
    }
}

/// The architecture hyper-parameters that shape the inference graphs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub resolution: i64,
    pub sequence_length: i64,
    pub patch_size: i64,
    pub temporal_patch_size: i64,
    pub spatial_depth: i64,
    pub temporal_depth: i64,
    pub embedding_dim: i64,
    pub enc_block: String,
    pub dec_block: String,
    pub twod_window_size: i64,
    pub causal_in_temporal_transformer: bool,
    pub causal_in_peg: bool,
    pub dim_head: i64,
    pub heads: i64,
    pub n_codes: i64,
    pub codebook_dim: i64,
    pub l2_code: bool,
    pub use_vae: bool,
    pub spatial_pos: SpatialPos,
    pub image_channels: i64,
    pub ff_mult: f64,
}

impl Config {
    /// The released architecture (every eval script): 512 wide, 8 heads of 64, patch 8,
    /// temporal patch 4, `ttww` encoder with window 8, `tttt` decoder, RoPE.
    pub fn released() -> Self {
        Config {
            resolution: 256,
            sequence_length: 17,
            patch_size: 8,
            temporal_patch_size: 4,
            spatial_depth: 4,
            temporal_depth: 4,
            embedding_dim: 512,
            enc_block: "ttww".into(),
            dec_block: "tttt".into(),
            twod_window_size: 8,
            causal_in_temporal_transformer: true,
            causal_in_peg: true,
            dim_head: 64,
            heads: 8,
            n_codes: 8192,
            codebook_dim: 8,
            l2_code: true,
            use_vae: false,
            spatial_pos: SpatialPos::Rope,
            image_channels: 3,
            ff_mult: 4.0,
        }
    }

    /// Channels of the latent the encoder emits (the codebook dim; VAE mean/logvar each).
    pub fn latent_channels(&self) -> i64 {
        self.codebook_dim
    }

    /// FeedForward inner width: `int(mult * 2/3 * dim)`, as the official code computes it.
    pub fn ff_inner_dim(&self) -> i64 {
        (self.ff_mult * (2.0 / 3.0) * self.embedding_dim as f64) as i64
    }

    /// Frame sizes must be multiples of this (patch, times window when a `w` block exists).
    pub fn size_multiple(&self) -> i64 {
        if self.enc_block.contains('w') || self.dec_block.contains('w') {
            self.patch_size * self.twod_window_size
        } else {
            self.patch_size
        }
    }

    /// Frames per clip the model was trained on (1 + k * temporal_patch).
    pub fn clip_frames(&self) -> i64 {
        let k = (self.sequence_length - 1) / self.temporal_patch_size;
        1 + k * self.temporal_patch_size
    }

    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.image_channels == 3,
            "image_channels = {} (only RGB models are supported)",
            self.image_channels
        );
        ensure!(
            self.patch_size > 0 && self.temporal_patch_size > 0,
            "patch sizes must be positive"
        );
        ensure!(
            self.embedding_dim > 0 && self.heads > 0 && self.dim_head > 0,
            "embedding_dim, heads and dim_head must be positive"
        );
        ensure!(
            self.embedding_dim % self.heads == 0,
            "embedding_dim {} is not divisible by heads {}",
            self.embedding_dim,
            self.heads
        );
        ensure!(
            self.spatial_depth as usize == self.enc_block.len(),
            "enc_block '{}' has {} blocks but spatial_depth is {}",
            self.enc_block,
            self.enc_block.len(),
            self.spatial_depth
        );
        for (name, blocks) in [("enc_block", &self.enc_block), ("dec_block", &self.dec_block)] {
            if let Some(c) = blocks.chars().find(|c| !matches!(c, 't' | 'w')) {
                bail!(
                    "{name} '{blocks}' holds block '{c}': only 't' (attention) and 'w' (window attention) blocks are supported"
                );
            }
        }
        ensure!(
            self.codebook_dim > 0 && self.n_codes > 0,
            "codebook_dim and n_codes must be positive"
        );
        if self.spatial_pos == SpatialPos::Rope {
            ensure!(
                self.dim_head % 4 == 0,
                "2-D RoPE needs dim_head divisible by 4 (got {})",
                self.dim_head
            );
        }
        Ok(())
    }

    /// Reads the saved `args` of a checkpoint: official defaults for absent fields,
    /// both spellings of the causal flags, unsupported variants refused by name.
    pub fn from_hyper_parameters(hp: &BTreeMap<String, HyperValue>) -> Result<Self> {
        let int = |k: &str| -> Result<Option<i64>> {
            match hp.get(k) {
                None | Some(HyperValue::None) => Ok(None),
                Some(HyperValue::Int(v)) => Ok(Some(*v)),
                Some(HyperValue::Bool(b)) => Ok(Some(*b as i64)),
                Some(other) => bail!("hyper-parameter '{k}' should be an integer, found {other:?}"),
            }
        };
        let req = |k: &str| -> Result<i64> { int(k)?.with_context(|| format!("hyper-parameter '{k}' is missing")) };
        let flag = |keys: &[&str]| -> Result<bool> {
            for k in keys {
                match hp.get(*k) {
                    Some(HyperValue::Bool(b)) => return Ok(*b),
                    Some(HyperValue::Int(v)) => return Ok(*v != 0),
                    Some(HyperValue::None) | None => {}
                    Some(other) => bail!("hyper-parameter '{k}' should be a flag, found {other:?}"),
                }
            }
            Ok(false)
        };
        let string = |k: &str| -> Result<Option<String>> {
            match hp.get(k) {
                None | Some(HyperValue::None) => Ok(None),
                Some(HyperValue::Str(s)) => Ok(Some(s.clone())),
                Some(other) => bail!("hyper-parameter '{k}' should be a string, found {other:?}"),
            }
        };
        let float = |k: &str| -> Result<Option<f64>> {
            match hp.get(k) {
                None | Some(HyperValue::None) => Ok(None),
                Some(HyperValue::Float(v)) => Ok(Some(*v)),
                Some(HyperValue::Int(v)) => Ok(Some(*v as f64)),
                Some(other) => bail!("hyper-parameter '{k}' should be a number, found {other:?}"),
            }
        };

        // Variants the official code supports but the released models do not use.
        if let Some(pe) = string("patch_embed")? {
            ensure!(
                pe == "linear",
                "patch_embed '{pe}' is not supported (only 'linear', as in every released model)"
            );
        }
        for k in ["defer_temporal_pool", "defer_spatial_pool", "use_external_codebook"] {
            ensure!(!flag(&[k])?, "'{k}' is set: not supported (no released model uses it)");
        }
        ensure!(int("gen_upscale")?.is_none(), "'gen_upscale' is set: not supported");

        let spatial_depth = int("spatial_depth")?.unwrap_or(4);
        let spatial_pos = match string("spatial_pos")?.as_deref() {
            None | Some("rel") => SpatialPos::Rel,
            Some("rope") => SpatialPos::Rope,
            Some(other) => bail!("spatial_pos '{other}' is not one of rel, rope"),
        };
        let default_block = "t".repeat(spatial_depth as usize);
        let enc_block = string("enc_block")?.unwrap_or_else(|| default_block.clone());
        let dec_block = string("dec_block")?.unwrap_or(default_block);
        let embedding_dim = req("embedding_dim")?;
        let cfg = Config {
            resolution: int("resolution")?.unwrap_or(256),
            sequence_length: int("sequence_length")?.unwrap_or(17),
            patch_size: int("patch_size")?.unwrap_or(16),
            temporal_patch_size: int("temporal_patch_size")?.unwrap_or(2),
            spatial_depth,
            temporal_depth: int("temporal_depth")?.unwrap_or(4),
            embedding_dim,
            enc_block,
            dec_block,
            twod_window_size: int("twod_window_size")?.unwrap_or(4),
            causal_in_temporal_transformer: flag(&[
                "causal_in_temporal_transformer",
                "casual_in_temporal_transformer",
            ])?,
            causal_in_peg: flag(&["causal_in_peg", "casual_in_peg"])?,
            dim_head: int("dim_head")?.unwrap_or(64),
            heads: int("heads")?.unwrap_or(8),
            n_codes: req("n_codes")?,
            codebook_dim: int("codebook_dim")?.unwrap_or(embedding_dim),
            l2_code: flag(&["l2_code"])?,
            use_vae: flag(&["use_vae"])?,
            spatial_pos,
            image_channels: int("image_channels")?.unwrap_or(3),
            ff_mult: float("ff_mult")?.unwrap_or(4.0),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// A named configuration: a released checkpoint's (from the official eval scripts) or `tiny`.
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    pub attention: AttentionSemantics,
    build: fn() -> Config,
}

impl Preset {
    pub fn config(&self) -> Config {
        (self.build)()
    }
}

fn stage1() -> Config {
    // Image-only stage: temporal patch 2, relative-position bias (no `--spatial_pos rope`).
    Config {
        temporal_patch_size: 2,
        spatial_pos: SpatialPos::Rel,
        ..Config::released()
    }
}

fn vae() -> Config {
    Config {
        use_vae: true,
        ..Config::released()
    }
}

fn tiny() -> Config {
    // Small and fast for tests: same blocks and semantics, narrow and shallow.
    Config {
        resolution: 32,
        sequence_length: 5,
        patch_size: 4,
        temporal_patch_size: 2,
        spatial_depth: 2,
        temporal_depth: 2,
        embedding_dim: 32,
        enc_block: "tw".into(),
        dec_block: "tt".into(),
        twod_window_size: 2,
        dim_head: 16,
        heads: 2,
        n_codes: 512,
        codebook_dim: 8,
        ..Config::released()
    }
}

fn tiny_vae() -> Config {
    Config {
        use_vae: true,
        ..tiny()
    }
}

pub const PRESETS: &[Preset] = &[
    Preset {
        name: "imagenet_only",
        description: "VQ, ImageNet (stage 1: temporal patch 2, rel-position bias, math attention)",
        attention: AttentionSemantics::Math,
        build: stage1,
    },
    Preset {
        name: "celebahq",
        description: "VQ, CelebA-HQ (temporal patch 2, rel-position bias)",
        attention: AttentionSemantics::Sdpa,
        build: stage1,
    },
    Preset {
        name: "ffhq",
        description: "VQ, FFHQ (temporal patch 2, rel-position bias)",
        attention: AttentionSemantics::Sdpa,
        build: stage1,
    },
    Preset {
        name: "imagenet_ucf",
        description: "VQ, ImageNet + UCF-101",
        attention: AttentionSemantics::Sdpa,
        build: Config::released,
    },
    Preset {
        name: "imagenet_k600",
        description: "VQ, ImageNet + Kinetics-600",
        attention: AttentionSemantics::Sdpa,
        build: Config::released,
    },
    Preset {
        name: "imagenet_mit",
        description: "VQ, ImageNet + Moments in Time",
        attention: AttentionSemantics::Sdpa,
        build: Config::released,
    },
    Preset {
        name: "imagenet_sthv2",
        description: "VQ, ImageNet + Something-Something v2",
        attention: AttentionSemantics::Sdpa,
        build: Config::released,
    },
    Preset {
        name: "celebahq_ucf",
        description: "VQ, CelebA-HQ + UCF-101",
        attention: AttentionSemantics::Sdpa,
        build: Config::released,
    },
    Preset {
        name: "celebahq_k600",
        description: "VQ, CelebA-HQ + Kinetics-600",
        attention: AttentionSemantics::Sdpa,
        build: Config::released,
    },
    Preset {
        name: "ffhq_ucf",
        description: "VQ, FFHQ + UCF-101",
        attention: AttentionSemantics::Sdpa,
        build: Config::released,
    },
    Preset {
        name: "ffhq_k600",
        description: "VQ, FFHQ + Kinetics-600",
        attention: AttentionSemantics::Sdpa,
        build: Config::released,
    },
    Preset {
        name: "imagenet_ucf_vae",
        description: "VAE, ImageNet + UCF-101",
        attention: AttentionSemantics::Sdpa,
        build: vae,
    },
    Preset {
        name: "imagenet_k600_vae",
        description: "VAE, ImageNet + Kinetics-600",
        attention: AttentionSemantics::Sdpa,
        build: vae,
    },
    Preset {
        name: "tiny",
        description: "small VQ model of the same architecture, for tests and demos",
        attention: AttentionSemantics::Sdpa,
        build: tiny,
    },
    Preset {
        name: "tiny_vae",
        description: "small VAE model of the same architecture, for tests",
        attention: AttentionSemantics::Sdpa,
        build: tiny_vae,
    },
];

pub fn preset(name: &str) -> Result<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name).with_context(|| {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
        format!("unknown preset '{name}' (known: {})", names.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_are_distinct() {
        for p in PRESETS {
            p.config().validate().unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
        assert_eq!(preset("imagenet_only").unwrap().attention, AttentionSemantics::Math);
        assert_eq!(preset("imagenet_k600").unwrap().config().ff_inner_dim(), 1365);
        assert!(preset("imagenet_k600_vae").unwrap().config().use_vae);
        let err = preset("nope").err().unwrap().to_string();
        assert!(
            err.contains("unknown preset 'nope'") && err.contains("imagenet_k600"),
            "{err}"
        );
    }

    #[test]
    fn hyper_parameters_defaults_and_casual_spelling() {
        let mut hp = BTreeMap::new();
        hp.insert("embedding_dim".to_string(), HyperValue::Int(128));
        hp.insert("n_codes".to_string(), HyperValue::Int(8192));
        hp.insert("codebook_dim".to_string(), HyperValue::Int(8));
        hp.insert("patch_size".to_string(), HyperValue::Int(8));
        hp.insert("casual_in_peg".to_string(), HyperValue::Bool(true));
        hp.insert("casual_in_temporal_transformer".to_string(), HyperValue::Bool(true));
        let c = Config::from_hyper_parameters(&hp).unwrap();
        assert!(c.causal_in_peg && c.causal_in_temporal_transformer);
        assert_eq!(c.spatial_pos, SpatialPos::Rel);
        assert_eq!(c.twod_window_size, 4);
        assert_eq!(c.enc_block, "tttt");
        assert!(!c.use_vae);
        hp.insert("enc_block".to_string(), HyperValue::Str("tatt".into()));
        let err = Config::from_hyper_parameters(&hp).unwrap_err().to_string();
        assert!(err.contains("block 'a'"), "{err}");
    }
}
