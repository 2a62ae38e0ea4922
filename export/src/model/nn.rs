//! The torch.nn building blocks: `Linear`, the two LayerNorm flavours, `F.normalize`.

use anyhow::Result;

use super::{Ctx, ModulePath};
use crate::graph::Value;

/// `nn.Linear`: the weight is stored transposed (`[in, out]`) under its state-dict key
/// so the graph multiplies with a plain MatMul.
pub struct Linear {
    path: ModulePath,
    weight: Value,
    bias: Option<Value>,
}

impl Linear {
    pub fn load(cx: &mut Ctx, path: ModulePath, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        Self::load_rows(cx, path, d_in, d_out, 0, d_out, bias)
    }

    /// Output rows `[r0, r1)` of a `[d_out, d_in]` layer (and its bias) as a layer of
    /// their own: how `to_kv` becomes K and V, `qkv` becomes Q, K, V and the GEGLU
    /// projection its value and gate. The derived initializers are named
    /// `<key>[r0:r1]`.
    pub fn load_rows(
        cx: &mut Ctx,
        path: ModulePath,
        d_in: usize,
        d_out: usize,
        r0: usize,
        r1: usize,
        bias: bool,
    ) -> Result<Self> {
        let suffix = if r1 - r0 == d_out {
            String::new()
        } else {
            format!("[{r0}:{r1}]")
        };
        let wkey = path.key("weight");
        let w = cx.w.get(&wkey, &[d_out, d_in])?;
        let n = r1 - r0;
        let mut t = vec![0f32; d_in * n];
        for r in 0..n {
            for c in 0..d_in {
                t[c * n + r] = w[(r0 + r) * d_in + c];
            }
        }
        let weight =
            cx.g.initializer_f32(&format!("{wkey}{suffix}"), &[d_in as i64, n as i64], &t)?;
        let bias = if bias {
            let bkey = path.key("bias");
            let b = cx.w.get(&bkey, &[d_out])?;
            Some(cx.g.initializer_f32(&format!("{bkey}{suffix}"), &[n as i64], &b[r0..r1])?)
        } else {
            None
        };
        Ok(Linear { path, weight, bias })
    }

    pub fn forward(&self, cx: &mut Ctx, x: &Value) -> Result<Value> {
        cx.enter(&self.path, |cx| {
            let y = cx.g.matmul(x, &self.weight)?;
            match &self.bias {
                Some(b) => cx.g.add(&y, b),
                None => Ok(y),
            }
        })
    }
}

/// `nn.LayerNorm` (`weight`/`bias`) or the official `LayerNorm` (`gamma` and a `beta` buffer).
pub struct LayerNorm {
    path: ModulePath,
    gamma: Value,
    beta: Value,
}

pub enum NormKeys {
    /// torch.nn.LayerNorm
    WeightBias,
    /// attention.LayerNorm
    GammaBeta,
}

impl LayerNorm {
    pub fn load(cx: &mut Ctx, path: ModulePath, dim: usize, keys: NormKeys) -> Result<Self> {
        let (g, b) = match keys {
            NormKeys::WeightBias => ("weight", "bias"),
            NormKeys::GammaBeta => ("gamma", "beta"),
        };
        let gamma = cx.param(&path, g, &[dim])?;
        let beta = cx.param(&path, b, &[dim])?;
        Ok(LayerNorm { path, gamma, beta })
    }

    pub fn forward(&self, cx: &mut Ctx, x: &Value) -> Result<Value> {
        cx.enter(&self.path, |cx| cx.g.layer_norm(x, &self.gamma, &self.beta, 1e-5))
    }
}

/// `F.normalize(x, dim=-1)`: `x / max(||x||, 1e-12)`.
pub fn l2_normalize(cx: &mut Ctx, x: &Value) -> Result<Value> {
    let norm = cx.g.reduce_l2_last(x)?;
    let eps = cx.g.scalar_f32(1e-12)?;
    let norm = cx.g.max(&norm, &eps)?;
    cx.g.div(x, &norm)
}
