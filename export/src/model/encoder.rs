//! `OmniTokenizer_Encoder`: frames to tokens. The first frame is embedded alone, the
//! rest in groups of `temporal_patch_size`; a spatial transformer over each frame's
//! tokens, then a temporal one over each token's frames.

use anyhow::Result;

use super::patch_embed::PatchEmbed;
use super::transformer::Transformer;
use super::{Ctx, ModulePath, VideoShape};
use crate::graph::{Dim, Value};

pub struct Encoder {
    path: ModulePath,
    to_patch_emb_first_frame: PatchEmbed,
    to_patch_emb: PatchEmbed,
    enc_spatial_transformer: Transformer,
    enc_temporal_transformer: Transformer,
}

impl Encoder {
    pub fn load(cx: &mut Ctx, path: ModulePath) -> Result<Self> {
        let cfg = cx.cfg;
        let temporal = "t".repeat(cfg.temporal_depth as usize);
        Ok(Encoder {
            to_patch_emb_first_frame: PatchEmbed::load(cx, path.child("to_patch_emb_first_frame"), 1)?,
            to_patch_emb: PatchEmbed::load(cx, path.child("to_patch_emb"), cfg.temporal_patch_size)?,
            enc_spatial_transformer: Transformer::load(
                cx,
                path.child("enc_spatial_transformer"),
                &cfg.enc_block,
                true,
            )?,
            enc_temporal_transformer: Transformer::load(cx, path.child("enc_temporal_transformer"), &temporal, false)?,
            path,
        })
    }

    /// `video`: `[B, F, H, W, 3]` floats -> tokens `[b, t, h, w, d]` (the official
    /// `forward`, channels-last).
    pub fn forward(&self, cx: &mut Ctx, video: &Value) -> Result<Value> {
        cx.enter(&self.path, |cx| {
            let p = Dim::Fixed(cx.cfg.patch_size);
            let h = cx.g.dim_div(&video.dim(2), &p)?;
            let w = cx.g.dim_div(&video.dim(3), &p)?;
            let first = cx.g.slice_const(video, 1, 0, 1)?;
            let rest = cx.g.slice_from(video, 1, 1)?;
            let t0 = self.to_patch_emb_first_frame.forward(cx, &first, &h, &w)?;
            let t1 = self.to_patch_emb.forward(cx, &rest, &h, &w)?;
            let tokens = cx.g.concat(&[&t0, &t1], 1)?;
            self.encode(cx, &tokens)
        })
    }

    /// The official `encode`: tokens `[b, t, h, w, d]` through both transformers.
    fn encode(&self, cx: &mut Ctx, tokens: &Value) -> Result<Value> {
        let shape = VideoShape::of(tokens);
        let VideoShape { b, t, h, w } = shape.clone();
        let d = tokens.dim(-1);
        // b t h w d -> (b t) (h w) d
        let bt = cx.g.dim_mul(&b, &t)?;
        let hw = cx.g.dim_mul(&h, &w)?;
        let x = cx.g.reshape(tokens, &[bt, hw, d.clone()])?;
        let x = self.enc_spatial_transformer.forward(cx, &x, &shape)?;
        // (b t) (h w) d -> b t h w d -> (b h w) t d
        let x =
            cx.g.reshape(&x, &[b.clone(), t.clone(), h.clone(), w.clone(), d.clone()])?;
        let x = cx.g.transpose(&x, &[0, 2, 3, 1, 4])?;
        let bhw = cx.g.dim_mul(&b, &h)?;
        let bhw = cx.g.dim_mul(&bhw, &w)?;
        let x = cx.g.reshape(&x, &[bhw, t.clone(), d.clone()])?;
        let x = self.enc_temporal_transformer.forward(cx, &x, &shape)?;
        // (b h w) t d -> b t h w d
        let x = cx.g.reshape(&x, &[b, h, w, t, d])?;
        cx.g.transpose(&x, &[0, 3, 1, 2, 4])
    }
}
