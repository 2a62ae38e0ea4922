//! Patch embedding (`to_patch_emb_first_frame`, `to_patch_emb`: LayerNorm, Linear,
//! LayerNorm over `(c, pt, p1, p2)`-flattened patches) and its inverse (`to_pixels_first_frame`,
//! `to_pixels`: Linear, then the same flattening undone).
//!
//! The graphs flatten each patch channels-last, `(pt, p1, p2, c)`, with the first
//! LayerNorm's and the Linear's weights reordered to match: the same sums (the LayerNorm
//! and the product do not depend on the order of the features), but the rearrangement then
//! moves runs of `p2 * c` contiguous values instead of single ones (ONNX Runtime's
//! Transpose: about 3 ms instead of 14 to 20 ms for a 17x256x256 clip).

use anyhow::Result;

use super::nn::{LayerNorm, Linear, NormKeys};
use super::{Ctx, ModulePath};
use crate::graph::{Dim, Value};

/// The slots of `to_patch_emb*`: `nn.Sequential(Rearrange, LayerNorm, Linear, LayerNorm)`.
const PATCH_NORM_IN: usize = 1;
const PATCH_PROJ: usize = 2;
const PATCH_NORM_OUT: usize = 3;
/// The slot of `to_pixels*`: `nn.Sequential(Linear, Rearrange)`.
const PIXELS_PROJ: usize = 0;

/// The traced order of a patch's values: entry `j` of the channels-last `(pt, p1, p2, c)`
/// flattening is entry `order[j]` of the official `(c, pt, p1, p2)` one.
fn patch_order(cx: &Ctx, pt: i64) -> Vec<usize> {
    let (c, pt, p) = (cx.cfg.image_channels as usize, pt as usize, cx.cfg.patch_size as usize);
    let mut order = Vec::with_capacity(c * pt * p * p);
    for t in 0..pt {
        for i in 0..p {
            for j in 0..p {
                for ch in 0..c {
                    order.push(((ch * pt + t) * p + i) * p + j);
                }
            }
        }
    }
    order
}

/// The name suffix of the reordered patch weights.
const PATCH_ORDER: &str = "[(pt p1 p2 c)]";

pub struct PatchEmbed {
    path: ModulePath,
    norm_in: LayerNorm,
    proj: Linear,
    norm_out: LayerNorm,
    pt: i64,
    p: i64,
}

impl PatchEmbed {
    /// `pt` is 1 for the first frame, `temporal_patch_size` for the rest.
    pub fn load(cx: &mut Ctx, path: ModulePath, pt: i64) -> Result<Self> {
        let (order, dim) = (patch_order(cx, pt), cx.cfg.embedding_dim as usize);
        let outputs: Vec<usize> = (0..dim).collect();
        Ok(PatchEmbed {
            norm_in: LayerNorm::load_reordered(cx, path.child(PATCH_NORM_IN), &order, PATCH_ORDER)?,
            proj: Linear::load_reordered(cx, path.child(PATCH_PROJ), &order, &outputs, true, PATCH_ORDER)?,
            norm_out: LayerNorm::load(cx, path.child(PATCH_NORM_OUT), dim, NormKeys::WeightBias)?,
            path,
            pt,
            p: cx.cfg.patch_size,
        })
    }

    /// `frames`: `[B, T, H, W, 3]` float (T a multiple of pt) -> tokens `[B, T/pt, h, w, d]`.
    pub fn forward(&self, cx: &mut Ctx, frames: &Value, h: &Dim, w: &Dim) -> Result<Value> {
        cx.enter(&self.path, |cx| self.trace(cx, frames, h, w))
    }

    fn trace(&self, cx: &mut Ctx, frames: &Value, h: &Dim, w: &Dim) -> Result<Value> {
        let (b, f) = (frames.dim(0), frames.dim(1));
        let (p, pt) = (Dim::Fixed(self.p), Dim::Fixed(self.pt));
        let t = cx.g.dim_div(&f, &pt)?;
        // b (t pt) (h p1) (w p2) c -> b t h w (pt p1 p2 c)
        let run = Dim::Fixed(3 * self.p);
        let v =
            cx.g.reshape(frames, &[b.clone(), t.clone(), pt, h.clone(), p, w.clone(), run])?;
        let v = cx.g.transpose(&v, &[0, 1, 3, 5, 2, 4, 6])?;
        let v = cx.g.reshape(
            &v,
            &[b, t, h.clone(), w.clone(), Dim::Fixed(3 * self.pt * self.p * self.p)],
        )?;
        let v = self.norm_in.forward(cx, &v)?;
        let v = self.proj.forward(cx, &v)?;
        self.norm_out.forward(cx, &v)
    }
}

pub struct ToPixels {
    path: ModulePath,
    proj: Linear,
    pt: i64,
    p: i64,
}

impl ToPixels {
    pub fn load(cx: &mut Ctx, path: ModulePath, pt: i64) -> Result<Self> {
        let (order, dim) = (patch_order(cx, pt), cx.cfg.embedding_dim as usize);
        let inputs: Vec<usize> = (0..dim).collect();
        Ok(ToPixels {
            proj: Linear::load_reordered(cx, path.child(PIXELS_PROJ), &inputs, &order, true, PATCH_ORDER)?,
            path,
            pt,
            p: cx.cfg.patch_size,
        })
    }

    /// tokens `[B, t, h, w, d]` -> frames `[B, t*pt, h*p, w*p, 3]`.
    pub fn forward(&self, cx: &mut Ctx, tokens: &Value) -> Result<Value> {
        cx.enter(&self.path, |cx| self.trace(cx, tokens))
    }

    fn trace(&self, cx: &mut Ctx, tokens: &Value) -> Result<Value> {
        let (b, t, h, w) = (tokens.dim(0), tokens.dim(1), tokens.dim(2), tokens.dim(3));
        let (p, pt) = (Dim::Fixed(self.p), Dim::Fixed(self.pt));
        let v = self.proj.forward(cx, tokens)?;
        // b t h w (pt p1 p2 c) -> b (t pt) (h p1) (w p2) c
        let v = cx.g.reshape(
            &v,
            &[
                b.clone(),
                t.clone(),
                h.clone(),
                w.clone(),
                pt.clone(),
                p.clone(),
                Dim::Fixed(3 * self.p),
            ],
        )?;
        let v = cx.g.transpose(&v, &[0, 1, 4, 2, 5, 3, 6])?;
        let f = cx.g.dim_mul(&t, &pt)?;
        let hh = cx.g.dim_mul(&h, &p)?;
        let ww = cx.g.dim_mul(&w, &p)?;
        cx.g.reshape(&v, &[b, f, hh, ww, Dim::Fixed(3)])
    }
}
