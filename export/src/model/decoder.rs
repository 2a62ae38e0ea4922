//! `post_vq_conv` plus `OmniTokenizer_Decoder`: tokens (VQ) or a latent (VAE) in, RGB
//! frames out (`round(clamp(x + 0.5, 0, 1) * 255)`).

use anyhow::Result;

use super::codebook::Lookup;
use super::nn::Linear;
use super::patch_embed::ToPixels;
use super::transformer::Transformer;
use super::{Ctx, VideoShape};
use crate::graph::{DType, Value};
use crate::onnx::Dim as OnnxDim;

pub struct Decoder {
    lookup: Option<Lookup>,
    post_vq_conv: Linear,
    dec_temporal_transformer: Transformer,
    dec_spatial_transformer: Transformer,
    to_pixels_first_frame: ToPixels,
    to_pixels: ToPixels,
}

impl Decoder {
    pub fn load(cx: &mut Ctx) -> Result<Self> {
        let cfg = cx.cfg.clone();
        Ok(Decoder {
            lookup: if cfg.use_vae { None } else { Some(Lookup::load(cx)?) },
            post_vq_conv: Linear::load(
                cx,
                "post_vq_conv.1",
                cfg.codebook_dim as usize,
                cfg.embedding_dim as usize,
                true,
            )?,
            dec_temporal_transformer: Transformer::load(
                cx,
                "decoder.dec_temporal_transformer",
                &"t".repeat(cfg.temporal_depth as usize),
                false,
            )?,
            dec_spatial_transformer: Transformer::load(cx, "decoder.dec_spatial_transformer", &cfg.dec_block, true)?,
            to_pixels_first_frame: ToPixels::load(cx, "decoder.to_pixels_first_frame", 1)?,
            to_pixels: ToPixels::load(cx, "decoder.to_pixels", cfg.temporal_patch_size)?,
        })
    }

    pub fn trace(&self, cx: &mut Ctx, intermediates: bool) -> Result<()> {
        let cfg = cx.cfg.clone();
        let z = match &self.lookup {
            Some(lookup) => {
                let dims = [
                    OnnxDim::named("batch"),
                    OnnxDim::named("t"),
                    OnnxDim::named("h"),
                    OnnxDim::named("w"),
                ];
                let tokens = cx.g.input("tokens", DType::I64, &dims)?;
                cx.scoped("codebook", |cx| lookup.forward(cx, &tokens))?
            }
            None => {
                let dims = [
                    OnnxDim::named("batch"),
                    OnnxDim::Fixed(cfg.codebook_dim),
                    OnnxDim::named("t"),
                    OnnxDim::named("h"),
                    OnnxDim::named("w"),
                ];
                let latent = cx.g.input("latent", DType::F32, &dims)?;
                cx.g.transpose(&latent, &[0, 2, 3, 4, 1])?
            }
        }; // b t h w c
        let (b, t, h, w) = (z.dim(0), z.dim(1), z.dim(2), z.dim(3));
        let x = cx.scoped("post_vq_conv", |cx| self.post_vq_conv.forward(cx, &z))?;
        let d = x.dim(-1);
        let shape = VideoShape {
            b: b.clone(),
            t: t.clone(),
            h: h.clone(),
            w: w.clone(),
        };

        let x = cx.scoped("decoder", |cx| -> Result<Value> {
            // b t h w d -> (b h w) t d
            let x = cx.g.transpose(&x, &[0, 2, 3, 1, 4])?;
            let bhw = cx.g.dim_mul(&b, &h)?;
            let bhw = cx.g.dim_mul(&bhw, &w)?;
            let x = cx.g.reshape(&x, &[bhw, t.clone(), d.clone()])?;
            let x = cx.scoped("dec_temporal_transformer", |cx| {
                self.dec_temporal_transformer.forward(cx, &x, &shape)
            })?;
            // (b h w) t d -> (b t) (h w) d
            let x =
                cx.g.reshape(&x, &[b.clone(), h.clone(), w.clone(), t.clone(), d.clone()])?;
            let x = cx.g.transpose(&x, &[0, 3, 1, 2, 4])?;
            let bt = cx.g.dim_mul(&b, &t)?;
            let hw = cx.g.dim_mul(&h, &w)?;
            let x = cx.g.reshape(&x, &[bt, hw, d.clone()])?;
            let x = cx.scoped("dec_spatial_transformer", |cx| {
                self.dec_spatial_transformer.forward(cx, &x, &shape)
            })?;
            let x =
                cx.g.reshape(&x, &[b.clone(), t.clone(), h.clone(), w.clone(), d.clone()])?;
            // to pixels: the first latent frame alone, the rest temporal_patch_size frames each
            let first = cx.g.slice_const(&x, 1, 0, 1)?;
            let rest = cx.g.slice_from(&x, 1, 1)?;
            let f0 = cx.scoped("to_pixels_first_frame", |cx| {
                self.to_pixels_first_frame.forward(cx, &first)
            })?;
            let f1 = cx.scoped("to_pixels", |cx| self.to_pixels.forward(cx, &rest))?;
            cx.g.concat(&[&f0, &f1], 1)
        })?; // b F H W 3

        let frame_names = ["batch", "frames", "height", "width"];
        if intermediates {
            let recon = cx.g.transpose(&x, &[0, 4, 1, 2, 3])?;
            cx.g.output(&recon, "recon", &["batch", "channels", "frames", "height", "width"])?;
        }
        let frames = cx.scoped("postprocess", |cx| -> Result<Value> {
            let half = cx.g.scalar_f32(0.5)?;
            let y = cx.g.add(&x, &half)?;
            let y = cx.g.clip(&y, 0.0, 1.0)?;
            let s = cx.g.scalar_f32(255.0)?;
            let y = cx.g.mul(&y, &s)?;
            let y = cx.g.round(&y)?;
            cx.g.cast(&y, DType::U8)
        })?;
        cx.g.output(&frames, "frames", &frame_names)
    }
}
