//! `FeedForward`: LayerNorm, a bias-free projection to 2 x inner, GEGLU (first half the
//! value, second the gate, exact GELU), a bias-free projection back.

use anyhow::Result;

use super::nn::{LayerNorm, Linear, NormKeys};
use super::{Ctx, ModulePath};
use crate::graph::Value;

/// The slots of `nn.Sequential(LayerNorm, Linear, GEGLU, Dropout, Linear)`.
const NORM: usize = 0;
const PROJ_IN: usize = 1;
const PROJ_OUT: usize = 4;

pub struct FeedForward {
    path: ModulePath,
    norm: LayerNorm,
    value: Linear,
    gate: Linear,
    out: Linear,
}

impl FeedForward {
    pub fn load(cx: &mut Ctx, path: ModulePath) -> Result<Self> {
        let dim = cx.cfg.embedding_dim as usize;
        let inner = cx.cfg.ff_inner_dim() as usize;
        Ok(FeedForward {
            norm: LayerNorm::load(cx, path.child(NORM), dim, NormKeys::WeightBias)?,
            value: Linear::load_rows(cx, path.child(PROJ_IN), dim, 2 * inner, 0, inner, false)?,
            gate: Linear::load_rows(cx, path.child(PROJ_IN), dim, 2 * inner, inner, 2 * inner, false)?,
            out: Linear::load(cx, path.child(PROJ_OUT), inner, dim, false)?,
            path,
        })
    }

    pub fn forward(&self, cx: &mut Ctx, x: &Value) -> Result<Value> {
        let h = self.norm.forward(cx, x)?;
        let value = self.value.forward(cx, &h)?;
        let gate = self.gate.forward(cx, &h)?;
        // GEGLU: value * gelu(gate)
        let h = cx.enter(&self.path, |cx| -> Result<Value> {
            let gate = cx.g.gelu(&gate)?;
            cx.g.mul(&value, &gate)
        })?;
        self.out.forward(cx, &h)
    }
}
