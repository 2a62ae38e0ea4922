//! `FeedForward`: LayerNorm, a bias-free projection to 2 x inner, GEGLU (first half the
//! value, second the gate, exact GELU), a bias-free projection back.

use anyhow::Result;

use super::nn::{LayerNorm, Linear, NormKeys};
use super::{Ctx, key};
use crate::graph::Value;

pub struct FeedForward {
    norm: LayerNorm,
    value: Linear,
    gate: Linear,
    out: Linear,
}

impl FeedForward {
    pub fn load(cx: &mut Ctx, prefix: &str) -> Result<Self> {
        let dim = cx.cfg.embedding_dim as usize;
        let inner = cx.cfg.ff_inner_dim() as usize;
        Ok(FeedForward {
            norm: LayerNorm::load(cx, &key(prefix, "0"), dim, NormKeys::WeightBias)?,
            value: Linear::load_rows(cx, &key(prefix, "1"), dim, 2 * inner, 0, inner, false)?,
            gate: Linear::load_rows(cx, &key(prefix, "1"), dim, 2 * inner, inner, 2 * inner, false)?,
            out: Linear::load(cx, &key(prefix, "4"), inner, dim, false)?,
        })
    }

    pub fn forward(&self, cx: &mut Ctx, x: &Value) -> Result<Value> {
        let h = self.norm.forward(cx, x)?;
        let value = self.value.forward(cx, &h)?;
        let gate = self.gate.forward(cx, &h)?;
        let gate = cx.g.gelu(&gate)?;
        let h = cx.g.mul(&value, &gate)?;
        self.out.forward(cx, &h)
    }
}
