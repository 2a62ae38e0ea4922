//! `PEG`: `x + dwconv3d(x)`, a depthwise 3x3x3 convolution with bias and zero padding,
//! causal in time (2 frames of padding before, none after) when `causal_in_peg`.

use anyhow::Result;

use super::{Ctx, ModulePath, VideoShape};
use crate::graph::{Dim, Value};

pub struct Peg {
    path: ModulePath,
    weight: Value,
    bias: Value,
    causal: bool,
}

impl Peg {
    pub fn load(cx: &mut Ctx, path: ModulePath) -> Result<Self> {
        let dim = cx.cfg.embedding_dim as usize;
        let dsconv = path.child("dsconv");
        Ok(Peg {
            weight: cx.param(&dsconv, "weight", &[dim, 1, 3, 3, 3])?,
            bias: cx.param(&dsconv, "bias", &[dim])?,
            causal: cx.cfg.causal_in_peg,
            path,
        })
    }

    /// The convolution term only (the transformer adds the residual). `x` is 3-D and is
    /// reshaped straight to `(b, t, h, w, d)`: for the spatial transformers that is
    /// `(b t) (h w) d`, for the temporal ones `(b h w) t d` reinterpreted without a permute,
    /// exactly as the official code (and the released weights) do.
    pub fn forward(&self, cx: &mut Ctx, x: &Value, shape: &VideoShape) -> Result<Value> {
        cx.enter(&self.path, |cx| self.trace(cx, x, shape))
    }

    fn trace(&self, cx: &mut Ctx, x: &Value, shape: &VideoShape) -> Result<Value> {
        let d = x.dim(-1);
        let grid = [shape.b.clone(), shape.t.clone(), shape.h.clone(), shape.w.clone(), d];
        let v = cx.g.reshape(x, &grid)?;
        let v = cx.g.transpose(&v, &[0, 4, 1, 2, 3])?; // b d t h w
        let pads = if self.causal {
            [2, 1, 1, 0, 1, 1]
        } else {
            [1, 1, 1, 1, 1, 1]
        };
        let v = cx.g.depthwise_conv3d(&v, &self.weight, &self.bias, pads)?;
        let v = cx.g.transpose(&v, &[0, 2, 3, 4, 1])?; // b t h w d
        let dims: Vec<Dim> = x.dims.clone();
        cx.g.reshape(&v, &dims)
    }
}
