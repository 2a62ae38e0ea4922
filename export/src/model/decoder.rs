//! `OmniTokenizer_Decoder`: tokens to frames. A temporal transformer over each token's
//! frames, a spatial one over each frame's tokens, then the first latent frame to one
//! frame of pixels and the rest to `temporal_patch_size` frames each.

use anyhow::Result;

use super::patch_embed::ToPixels;
use super::transformer::Transformer;
use super::{Ctx, ModulePath, VideoShape};
use crate::graph::Value;

pub struct Decoder {
    path: ModulePath,
    dec_temporal_transformer: Transformer,
    dec_spatial_transformer: Transformer,
    to_pixels_first_frame: ToPixels,
    to_pixels: ToPixels,
}

impl Decoder {
    pub fn load(cx: &mut Ctx, path: ModulePath) -> Result<Self> {
        let cfg = cx.cfg;
        let temporal = "t".repeat(cfg.temporal_depth as usize);
        Ok(Decoder {
            dec_temporal_transformer: Transformer::load(cx, path.child("dec_temporal_transformer"), &temporal, false)?,
            dec_spatial_transformer: Transformer::load(
                cx,
                path.child("dec_spatial_transformer"),
                &cfg.dec_block,
                true,
            )?,
            to_pixels_first_frame: ToPixels::load(cx, path.child("to_pixels_first_frame"), 1)?,
            to_pixels: ToPixels::load(cx, path.child("to_pixels"), cfg.temporal_patch_size)?,
            path,
        })
    }

    /// Tokens `[b, t, h, w, d]` -> frames `[B, F, H, W, 3]` around 0 (the official
    /// `forward` and `decode`, channels-last).
    pub fn forward(&self, cx: &mut Ctx, tokens: &Value) -> Result<Value> {
        cx.enter(&self.path, |cx| {
            let shape = VideoShape::of(tokens);
            let VideoShape { b, t, h, w } = shape.clone();
            let d = tokens.dim(-1);
            // b t h w d -> (b h w) t d
            let x = cx.g.transpose(tokens, &[0, 2, 3, 1, 4])?;
            let bhw = cx.g.dim_mul(&b, &h)?;
            let bhw = cx.g.dim_mul(&bhw, &w)?;
            let x = cx.g.reshape(&x, &[bhw, t.clone(), d.clone()])?;
            let x = self.dec_temporal_transformer.forward(cx, &x, &shape)?;
            // (b h w) t d -> (b t) (h w) d
            let x =
                cx.g.reshape(&x, &[b.clone(), h.clone(), w.clone(), t.clone(), d.clone()])?;
            let x = cx.g.transpose(&x, &[0, 3, 1, 2, 4])?;
            let bt = cx.g.dim_mul(&b, &t)?;
            let hw = cx.g.dim_mul(&h, &w)?;
            let x = cx.g.reshape(&x, &[bt, hw, d.clone()])?;
            let x = self.dec_spatial_transformer.forward(cx, &x, &shape)?;
            let x = cx.g.reshape(&x, &[b, t, h, w, d])?;
            // to pixels: the first latent frame alone, the rest temporal_patch_size frames each
            let first = cx.g.slice_const(&x, 1, 0, 1)?;
            let rest = cx.g.slice_from(&x, 1, 1)?;
            let f0 = self.to_pixels_first_frame.forward(cx, &first)?;
            let f1 = self.to_pixels.forward(cx, &rest)?;
            cx.g.concat(&[&f0, &f1], 1)
        })
    }
}
