//! `PEG`: `x + dwconv3d(x)`, a depthwise 3x3x3 convolution with bias and zero padding,
//! causal in time (2 frames of padding before, none after) when `causal_in_peg`.
//!
//! Traced as the sum of three depthwise 3x3 convolutions over frames, one per temporal tap,
//! each on the input shifted in time: the same sums as the 3-D convolution (to float
//! rounding), which ONNX Runtime's CPU provider runs only through a generic grouped path
//! (about 14 ms of a 17x256x256 clip's graph each), while it has blocked kernels for 2-D
//! depthwise ones (docs/GRAPHS.md).

use anyhow::Result;

use super::{Ctx, ModulePath, VideoShape};
use crate::graph::{Dim, Value};

pub struct Peg {
    path: ModulePath,
    /// `dsconv.weight[:, :, dt]` for the temporal taps dt = 0, 1, 2: `[dim, 1, 3, 3]`
    taps: [Value; 3],
    bias: Value,
    causal: bool,
}

impl Peg {
    pub fn load(cx: &mut Ctx, path: ModulePath) -> Result<Self> {
        let dim = cx.cfg.embedding_dim as usize;
        let dsconv = path.child("dsconv");
        let key = dsconv.key("weight");
        let w = cx.w.get(&key, &[dim, 1, 3, 3, 3])?;
        let mut tap = |dt: usize| {
            let k: Vec<f32> = (0..dim * 9).map(|i| w[(i / 9) * 27 + dt * 9 + i % 9]).collect();
            cx.g.initializer_f32(&format!("{key}[:,:,{dt}]"), &[dim as i64, 1, 3, 3], &k)
        };
        let taps = [tap(0)?, tap(1)?, tap(2)?];
        Ok(Peg {
            taps,
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
        // (b, t, h w d): the shifts in time copy whole frames (ONNX Runtime's Pad is about
        // twice as fast on this 3-D view as on the 5-D one)
        let hw = cx.g.dim_mul(&shape.h, &shape.w)?;
        let v = [shape.b.clone(), shape.t.clone(), cx.g.dim_mul(&hw, &d)?];
        let v = cx.g.reshape(x, &v)?;
        let frames = [cx.g.dim_mul(&shape.b, &shape.t)?, shape.h.clone(), shape.w.clone(), d];
        let mut sum = self.tap(cx, &v, 0, &frames)?;
        for dt in 1..3 {
            let c = self.tap(cx, &v, dt, &frames)?;
            sum = cx.g.add(&sum, &c)?;
        }
        let v = cx.g.transpose(&sum, &[0, 2, 3, 1])?; // (b t) h w d
        let dims: Vec<Dim> = x.dims.clone();
        cx.g.reshape(&v, &dims)
    }

    /// Temporal tap `dt` of the convolution on `v` = `(b, t, h w d)`, as `((b t), d, h, w)`:
    /// output frame t reads input frame t + dt - (frames of padding in front), zeros
    /// outside the clip; the bias rides on the last tap.
    fn tap(&self, cx: &mut Ctx, v: &Value, dt: usize, frames: &[Dim; 4]) -> Result<Value> {
        let front = if self.causal { 2 } else { 1 };
        let s = cx.g.shift_axis(v, 1, front - dt as i64)?;
        let s = cx.g.reshape(&s, frames)?;
        let s = cx.g.transpose(&s, &[0, 3, 1, 2])?; // (b t) d h w
        cx.g.depthwise_conv2d(&s, &self.taps[dt], (dt == 2).then_some(&self.bias))
    }
}
