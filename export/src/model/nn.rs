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
        let rows: Vec<usize> = (r0..r1).collect();
        let cols: Vec<usize> = (0..d_in).collect();
        Self::load_mapped(cx, path, (d_in, d_out), &rows, &cols, bias, &suffix)
    }

    /// The layer with its features in another order: traced input `j` is the official
    /// input `inputs[j]`, traced output `j` the official output `outputs[j]` (how the patch
    /// layers take their patches channels-last, `patch_embed::patch_order`). The derived
    /// initializers are named `<key><suffix>`.
    pub fn load_reordered(
        cx: &mut Ctx,
        path: ModulePath,
        inputs: &[usize],
        outputs: &[usize],
        bias: bool,
        suffix: &str,
    ) -> Result<Self> {
        let shape = (inputs.len(), outputs.len());
        Self::load_mapped(cx, path, shape, outputs, inputs, bias, suffix)
    }

    /// Rows `rows` and columns `cols` of the `[d_out, d_in]` weight, stored transposed.
    fn load_mapped(
        cx: &mut Ctx,
        path: ModulePath,
        (d_in, d_out): (usize, usize),
        rows: &[usize],
        cols: &[usize],
        bias: bool,
        suffix: &str,
    ) -> Result<Self> {
        let wkey = path.key("weight");
        let w = cx.w.get(&wkey, &[d_out, d_in])?;
        let n = rows.len();
        let mut t = vec![0f32; cols.len() * n];
        for (r, &row) in rows.iter().enumerate() {
            for (c, &col) in cols.iter().enumerate() {
                t[c * n + r] = w[row * d_in + col];
            }
        }
        let weight =
            cx.g.initializer_f32(&format!("{wkey}{suffix}"), &[cols.len() as i64, n as i64], &t)?;
        let bias = if bias {
            let bkey = path.key("bias");
            let b = cx.w.get(&bkey, &[d_out])?;
            let b: Vec<f32> = rows.iter().map(|&r| b[r]).collect();
            Some(cx.g.initializer_f32(&format!("{bkey}{suffix}"), &[n as i64], &b)?)
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

    /// A `torch.nn.LayerNorm` over features in another order: traced feature `j` is the
    /// official feature `order[j]` (see [`Linear::load_reordered`]).
    pub fn load_reordered(cx: &mut Ctx, path: ModulePath, order: &[usize], suffix: &str) -> Result<Self> {
        let mut param = |name: &str| {
            let key = path.key(name);
            let v = cx.w.get(&key, &[order.len()])?;
            let v: Vec<f32> = order.iter().map(|&i| v[i]).collect();
            cx.g.initializer_f32(&format!("{key}{suffix}"), &[order.len() as i64], &v)
        };
        let (gamma, beta) = (param("weight")?, param("bias")?);
        Ok(LayerNorm { path, gamma, beta })
    }

    pub fn forward(&self, cx: &mut Ctx, x: &Value) -> Result<Value> {
        cx.enter(&self.path, |cx| cx.g.layer_norm(x, &self.gamma, &self.beta, 1e-5))
    }
}

/// `F.normalize(x, dim=-1)`: `x / max(||x||, 1e-12)`.
pub fn l2_normalize(cx: &mut Ctx, x: &Value) -> Result<Value> {
    let norm = cx.g.reduce_l2_last(x)?;
    let norm = cx.g.clip_min(&norm, 1e-12)?;
    cx.g.div(x, &norm)
}
