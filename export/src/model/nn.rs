//! The torch.nn building blocks: `Linear` and the two LayerNorm flavours.

use anyhow::Result;

use super::{Ctx, key};
use crate::graph::Value;

/// `nn.Linear`: the weight is stored transposed (`[in, out]`) under its state-dict key
/// so the graph multiplies with a plain MatMul.
pub struct Linear {
    weight: Value,
    bias: Option<Value>,
}

impl Linear {
    pub fn load(cx: &mut Ctx, prefix: &str, d_in: usize, d_out: usize, bias: bool) -> Result<Self> {
        Self::load_rows(cx, prefix, d_in, d_out, 0, d_out, bias)
    }

    /// Rows `[r0, r1)` of a `[d_out, d_in]` weight (and bias) as their own layer: how
    /// `to_kv` becomes K and V, `qkv` becomes Q, K, V and the GEGLU projection its value and gate.
    pub fn load_rows(
        cx: &mut Ctx,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        r0: usize,
        r1: usize,
        bias: bool,
    ) -> Result<Self> {
        let rows: Vec<(usize, f32)> = (r0..r1).map(|r| (r, 1.0)).collect();
        let suffix = if r1 - r0 == d_out {
            String::new()
        } else {
            format!("[{r0}:{r1}]")
        };
        Self::load_mapped(cx, prefix, d_in, d_out, &rows, &suffix, bias)
    }

    /// A layer whose output `i` is `sign * output row src` of the stored `[d_out, d_in]`
    /// layer, for `(src, sign) = rows[i]`; `suffix` names the derived initializers.
    pub fn load_mapped(
        cx: &mut Ctx,
        prefix: &str,
        d_in: usize,
        d_out: usize,
        rows: &[(usize, f32)],
        suffix: &str,
        bias: bool,
    ) -> Result<Self> {
        let wkey = key(prefix, "weight");
        let w = cx.w.get(&wkey, &[d_out, d_in])?;
        let n = rows.len();
        let mut t = vec![0f32; d_in * n];
        for (r, &(src, sign)) in rows.iter().enumerate() {
            for c in 0..d_in {
                t[c * n + r] = sign * w[src * d_in + c];
            }
        }
        let weight =
            cx.g.initializer_f32(&format!("{wkey}{suffix}"), &[d_in as i64, n as i64], &t)?;
        let bias = if bias {
            let bkey = key(prefix, "bias");
            let b = cx.w.get(&bkey, &[d_out])?;
            let v: Vec<f32> = rows.iter().map(|&(src, sign)| sign * b[src]).collect();
            Some(cx.g.initializer_f32(&format!("{bkey}{suffix}"), &[n as i64], &v)?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    pub fn forward(&self, cx: &mut Ctx, x: &Value) -> Result<Value> {
        let y = cx.g.matmul(x, &self.weight)?;
        match &self.bias {
            Some(b) => cx.g.add(&y, b),
            None => Ok(y),
        }
    }
}

/// `nn.LayerNorm` (`weight`/`bias`) or the official `LayerNorm` (`gamma` and a `beta` buffer).
pub struct LayerNorm {
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
    pub fn load(cx: &mut Ctx, prefix: &str, dim: usize, keys: NormKeys) -> Result<Self> {
        let (gk, bk) = match keys {
            NormKeys::WeightBias => ("weight", "bias"),
            NormKeys::GammaBeta => ("gamma", "beta"),
        };
        let (gk, bk) = (key(prefix, gk), key(prefix, bk));
        let g = cx.w.get(&gk, &[dim])?;
        let gamma = cx.g.initializer_f32(&gk, &[dim as i64], &g)?;
        let b = cx.w.get(&bk, &[dim])?;
        let beta = cx.g.initializer_f32(&bk, &[dim as i64], &b)?;
        Ok(LayerNorm { gamma, beta })
    }

    pub fn forward(&self, cx: &mut Ctx, x: &Value) -> Result<Value> {
        cx.g.layer_norm(x, &self.gamma, &self.beta, 1e-5)
    }
}

/// `F.normalize(x, dim=-1)`: `x / max(||x||, 1e-12)`.
pub fn l2_normalize(cx: &mut Ctx, x: &Value) -> Result<Value> {
    let norm = cx.g.reduce_l2_last(x)?;
    let eps = cx.g.scalar_f32(1e-12)?;
    let norm = cx.g.max(&norm, &eps)?;
    cx.g.div(x, &norm)
}
