//! `OmniTokenizer_Encoder` plus `pre_vq_conv` and the quantizer: RGB frames in, tokens
//! (VQ) or the Gaussian latent's mean and log-variance (VAE) out.

use anyhow::Result;

use super::codebook::Quantizer;
use super::nn::{Linear, l2_normalize};
use super::patch_embed::PatchEmbed;
use super::transformer::Transformer;
use super::{Ctx, VideoShape};
use crate::graph::{DType, Dim, Value};
use crate::onnx::Dim as OnnxDim;

pub struct Encoder {
    to_patch_emb_first_frame: PatchEmbed,
    to_patch_emb: PatchEmbed,
    enc_spatial_transformer: Transformer,
    enc_temporal_transformer: Transformer,
    pre_vq_conv: Linear,
    quantizer: Option<Quantizer>,
}

impl Encoder {
    pub fn load(cx: &mut Ctx) -> Result<Self> {
        let cfg = cx.cfg.clone();
        let c = cfg.codebook_dim as usize * if cfg.use_vae { 2 } else { 1 };
        if cfg.use_vae {
            // A VAE checkpoint still holds the (untrained) codebook of its VQ ancestor.
            cx.w.expect_unused("codebook.embeddings");
        }
        Ok(Encoder {
            to_patch_emb_first_frame: PatchEmbed::load(cx, "encoder.to_patch_emb_first_frame", 1)?,
            to_patch_emb: PatchEmbed::load(cx, "encoder.to_patch_emb", cfg.temporal_patch_size)?,
            enc_spatial_transformer: Transformer::load(cx, "encoder.enc_spatial_transformer", &cfg.enc_block, true)?,
            enc_temporal_transformer: Transformer::load(
                cx,
                "encoder.enc_temporal_transformer",
                &"t".repeat(cfg.temporal_depth as usize),
                false,
            )?,
            pre_vq_conv: Linear::load(cx, "pre_vq_conv.1", cfg.embedding_dim as usize, c, true)?,
            quantizer: if cfg.use_vae { None } else { Some(Quantizer::load(cx)?) },
        })
    }

    /// Traces the whole encoder graph: inputs, outputs and everything between.
    pub fn trace(&self, cx: &mut Ctx, intermediates: bool) -> Result<()> {
        let cfg = cx.cfg.clone();
        let dims = [
            OnnxDim::named("batch"),
            OnnxDim::named("frames"),
            OnnxDim::named("height"),
            OnnxDim::named("width"),
            OnnxDim::Fixed(3),
        ];
        let frames = cx.g.input("frames", DType::U8, &dims)?;
        let (b, height, width) = (frames.dim(0), frames.dim(2), frames.dim(3));
        let p = Dim::Fixed(cfg.patch_size);
        let h = cx.g.dim_div(&height, &p)?;
        let w = cx.g.dim_div(&width, &p)?;

        // x = u8 / 255 - 0.5
        let x = cx.scoped("preprocess", |cx| -> Result<Value> {
            let x = cx.g.cast(&frames, DType::F32)?;
            let s = cx.g.scalar_f32(255.0)?;
            let x = cx.g.div(&x, &s)?;
            let half = cx.g.scalar_f32(0.5)?;
            cx.g.sub(&x, &half)
        })?;

        // The first frame is embedded alone, the rest in groups of temporal_patch_size.
        let tokens = cx.scoped("encoder", |cx| -> Result<Value> {
            let first = cx.g.slice_const(&x, 1, 0, 1)?;
            let rest = cx.g.slice_from(&x, 1, 1)?;
            let t0 = cx.scoped("to_patch_emb_first_frame", |cx| {
                self.to_patch_emb_first_frame.forward(cx, &first, &h, &w)
            })?;
            let t1 = cx.scoped("to_patch_emb", |cx| self.to_patch_emb.forward(cx, &rest, &h, &w))?;
            cx.g.concat(&[&t0, &t1], 1)
        })?;
        let d = tokens.dim(-1);
        let t = tokens.dim(1);
        let shape = VideoShape {
            b: b.clone(),
            t: t.clone(),
            h: h.clone(),
            w: w.clone(),
        };

        let x = cx.scoped("encoder", |cx| -> Result<Value> {
            // b t h w d -> (b t) (h w) d
            let bt = cx.g.dim_mul(&b, &t)?;
            let hw = cx.g.dim_mul(&h, &w)?;
            let x = cx.g.reshape(&tokens, &[bt, hw, d.clone()])?;
            let x = cx.scoped("enc_spatial_transformer", |cx| {
                self.enc_spatial_transformer.forward(cx, &x, &shape)
            })?;
            // (b t) (h w) d -> b t h w d -> (b h w) t d
            let x =
                cx.g.reshape(&x, &[b.clone(), t.clone(), h.clone(), w.clone(), d.clone()])?;
            let x = cx.g.transpose(&x, &[0, 2, 3, 1, 4])?;
            let bhw = cx.g.dim_mul(&b, &h)?;
            let bhw = cx.g.dim_mul(&bhw, &w)?;
            let x = cx.g.reshape(&x, &[bhw, t.clone(), d.clone()])?;
            let x = cx.scoped("enc_temporal_transformer", |cx| {
                self.enc_temporal_transformer.forward(cx, &x, &shape)
            })?;
            // (b h w) t d -> b t h w d
            let x =
                cx.g.reshape(&x, &[b.clone(), h.clone(), w.clone(), t.clone(), d.clone()])?;
            cx.g.transpose(&x, &[0, 3, 1, 2, 4])
        })?;
        let z = cx.scoped("pre_vq_conv", |cx| self.pre_vq_conv.forward(cx, &x))?; // b t h w c

        let latent_names = ["batch", "channels", "t", "h", "w"];
        let to_bcthw = |cx: &mut Ctx, v: &Value| cx.g.transpose(v, &[0, 4, 1, 2, 3]);
        if intermediates {
            let pq = to_bcthw(cx, &z)?;
            cx.g.output(&pq, "pre_quant", &latent_names)?;
        }
        match &self.quantizer {
            Some(q) => cx.scoped("codebook", |cx| -> Result<()> {
                let z = if cfg.l2_code { l2_normalize(cx, &z)? } else { z.clone() };
                let idx = q.forward(cx, &z)?;
                cx.g.output(&idx, "tokens", &["batch", "t", "h", "w"])
            }),
            None => cx.scoped("posterior", |cx| -> Result<()> {
                // DiagonalGaussianDistribution: mean and logvar halves, logvar clamped.
                let c = cfg.codebook_dim;
                let mean = cx.g.slice_const(&z, -1, 0, c)?;
                let logvar = cx.g.slice_const(&z, -1, c, 2 * c)?;
                let logvar = cx.g.clip(&logvar, -30.0, 20.0)?;
                let mean = to_bcthw(cx, &mean)?;
                let logvar = to_bcthw(cx, &logvar)?;
                cx.g.output(&mean, "latent_mean", &latent_names)?;
                cx.g.output(&logvar, "latent_logvar", &latent_names)
            }),
        }
    }
}
