//! `Attention` (the `t` blocks): LayerNorm, Q from `to_q`, K and V from the two halves of
//! `to_kv`, heads as the outer factor of the channels, optional 2-D RoPE, per-head L2
//! normalisation times learned `q_scale`/`k_scale` (their product on Q), logit scale 8, `to_out`.

use anyhow::Result;

use super::nn::{LayerNorm, Linear, NormKeys, l2_normalize};
use super::position::{AlibiPositionalBias, ContinuousPositionBias, apply_rope, rope_positions, rope_tables};
use super::{Ctx, ModulePath, VideoShape};
use crate::config::{AttentionSemantics, SpatialPos};
use crate::graph::{Dim, Heads, Value};

/// The official `scale` of `Attention` (the logits of L2-normalised Q and K).
const LOGIT_SCALE: f32 = 8.0;

pub struct Attention {
    path: ModulePath,
    norm: LayerNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    /// 2-D RoPE on the spatial tokens.
    rope: bool,
    /// A spatial transformer's block (tokens of one frame) or a temporal one.
    is_spatial: bool,
    /// `q_scale * k_scale`: the logits `sum_d q_d q_scale_d k_d k_scale_d` of the normalised
    /// Q and K need the product on one side only (one full-size pass fewer than scaling both).
    qk_scale: Value,
    to_out: Linear,
    /// Only applied by the math semantics, on spatial blocks.
    spatial_rel_pos_bias: Option<ContinuousPositionBias>,
    /// ALiBi, which the math semantics apply to causal (temporal) blocks.
    rel_pos_bias: Option<AlibiPositionalBias>,
    causal: bool,
    heads: usize,
    dim_head: usize,
}

impl Attention {
    /// `spatial_pos` is what the block was built with: the spatial transformers get the
    /// model's setting, the temporal ones the official default `rel` (whose bias they
    /// never apply, since it is spatial-only). `is_spatial` as in the official forward.
    pub fn load(
        cx: &mut Ctx,
        path: ModulePath,
        spatial_pos: SpatialPos,
        causal: bool,
        is_spatial: bool,
    ) -> Result<Self> {
        let dim = cx.cfg.embedding_dim as usize;
        let heads = cx.cfg.heads as usize;
        let dim_head = cx.cfg.dim_head as usize;
        let inner = heads * dim_head;
        let math = cx.semantics == AttentionSemantics::Math;
        // The MLP's weights exist whenever the block was built with `rel`.
        let spatial_rel_pos_bias = if spatial_pos == SpatialPos::Rel {
            let p = path.child("spatial_rel_pos_bias");
            if math && is_spatial {
                Some(ContinuousPositionBias::load(cx, p)?)
            } else {
                ContinuousPositionBias::expect_unused(cx, &p);
                None
            }
        } else {
            None
        };
        // `context_norm` serves cross-attention, which these transformers do not have.
        let context_norm = path.child("context_norm");
        cx.w.expect_unused(&context_norm.key("gamma"));
        cx.w.expect_unused(&context_norm.key("beta"));
        let to_kv = path.child("to_kv");
        Ok(Attention {
            norm: LayerNorm::load(cx, path.child("norm"), dim, NormKeys::GammaBeta)?,
            rope: spatial_pos == SpatialPos::Rope,
            is_spatial,
            to_q: Linear::load(cx, path.child("to_q"), dim, inner, false)?,
            to_k: Linear::load_rows(cx, to_kv.clone(), dim, 2 * inner, 0, inner, false)?,
            to_v: Linear::load_rows(cx, to_kv, dim, 2 * inner, inner, 2 * inner, false)?,
            qk_scale: {
                let (q, k) = (path.key("q_scale"), path.key("k_scale"));
                let qk: Vec<f32> = {
                    let (qs, ks) = (cx.w.get(&q, &[dim_head])?, cx.w.get(&k, &[dim_head])?);
                    qs.iter().zip(ks.iter()).map(|(a, b)| a * b).collect()
                };
                cx.g.initializer_f32(&format!("{q}[*k_scale]"), &[dim_head as i64], &qk)?
            },
            to_out: Linear::load(cx, path.child("to_out"), inner, dim, false)?,
            spatial_rel_pos_bias,
            rel_pos_bias: (math && causal).then(|| AlibiPositionalBias::new(path.child("rel_pos_bias"), heads)),
            causal,
            heads,
            dim_head,
            path,
        })
    }

    /// `x`: `[n_seq, seq, dim]`.
    pub fn forward(&self, cx: &mut Ctx, x: &Value, shape: &VideoShape) -> Result<Value> {
        cx.enter(&self.path, |cx| self.trace(cx, x, shape))
    }

    fn trace(&self, cx: &mut Ctx, x: &Value, shape: &VideoShape) -> Result<Value> {
        let is_spatial = self.is_spatial;
        // As in the official forward, K and V come from the input *before* the LayerNorm
        // (`kv_input` is taken ahead of `x = self.norm(x)`); only Q sees the normalised input.
        let normed = self.norm.forward(cx, x)?;
        let q = self.to_q.forward(cx, &normed)?;
        let k = self.to_k.forward(cx, x)?;
        // RoPE is linear per token and the L2 normalisation per head divides out any positive
        // factor of a token's row (no bias in to_q / to_kv)
        cx.g.mark_row_scale_cancels(&q)?;
        cx.g.mark_row_scale_cancels(&k)?;
        let v = self.to_v.forward(cx, x)?;
        let (b, n) = (x.dim(0), x.dim(1));
        let per_head = [
            b.clone(),
            n.clone(),
            Dim::Fixed(self.heads as i64),
            Dim::Fixed(self.dim_head as i64),
        ];
        let (q, k) = if is_spatial && self.rope {
            let (cos, sin) = rope_tables(cx, &shape.h, &shape.w, self.dim_head)?;
            let positions = rope_positions(cx, &b, &n)?;
            (
                apply_rope(cx, &q, &cos, &sin, &positions, self.heads)?,
                apply_rope(cx, &k, &cos, &sin, &positions, self.heads)?,
            )
        } else {
            (q, k)
        };
        let q = cx.g.reshape(&q, &per_head)?;
        let k = cx.g.reshape(&k, &per_head)?;
        let q = l2_normalize(cx, &q)?;
        let q = cx.g.mul(&q, &self.qk_scale)?;
        let k = l2_normalize(cx, &k)?;
        let flat = [b, n, Dim::Fixed((self.heads * self.dim_head) as i64)];
        let q = cx.g.reshape(&q, &flat)?;
        let k = cx.g.reshape(&k, &flat)?;

        let bias = match (&self.spatial_rel_pos_bias, &self.rel_pos_bias) {
            (Some(m), _) if is_spatial => Some(m.forward(cx, &shape.h, &shape.w)?),
            (_, Some(alibi)) => Some(alibi.forward(cx, &x.dim(1))?),
            _ => None,
        };
        let heads = Heads {
            count: self.heads,
            scale: LOGIT_SCALE,
        };
        let out = match &bias {
            // MultiHeadAttention without mask or bias stays on ONNX Runtime's flash path.
            None if !self.causal => cx.g.multi_head_attention(&q, &k, &v, heads)?,
            None => cx.g.attention(&q, &k, &v, None, heads, true)?,
            // ALiBi carries the causal mask.
            Some(bias) => cx.g.attention(&q, &k, &v, Some(bias), heads, false)?,
        };
        self.to_out.forward(cx, &out)
    }
}
