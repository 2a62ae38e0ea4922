//! `Attention` (the `t` blocks): LayerNorm, Q from `to_q`, K and V from the two halves of
//! `to_kv`, heads as the outer factor of the channels, optional 2-D RoPE, per-head L2
//! normalisation times learned `q_scale`/`k_scale`, logit scale 8, `to_out`.

use anyhow::Result;

use super::nn::{LayerNorm, Linear, NormKeys, l2_normalize};
use super::position::{ContinuousPositionBias, alibi_causal_bias, apply_rope, rope_tables};
use super::{Ctx, VideoShape, key};
use crate::config::{AttentionSemantics, SpatialPos};
use crate::graph::{DType, Dim, Value};
use crate::onnx::AttributeProto;

pub struct Attention {
    norm: LayerNorm,
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    /// 2-D RoPE on the spatial tokens.
    rope: bool,
    /// A spatial transformer's block (tokens of one frame) or a temporal one.
    is_spatial: bool,
    q_scale: Value,
    k_scale: Value,
    to_out: Linear,
    rel_pos_bias: Option<ContinuousPositionBias>,
    causal: bool,
    heads: usize,
    dim_head: usize,
}

impl Attention {
    /// `spatial_pos` is what the block was built with: the spatial transformers get the
    /// model's setting, the temporal ones the official default `rel` (whose bias they
    /// never apply, since it is spatial-only). `is_spatial` as in the official forward.
    pub fn load(cx: &mut Ctx, prefix: &str, spatial_pos: SpatialPos, causal: bool, is_spatial: bool) -> Result<Self> {
        let dim = cx.cfg.embedding_dim as usize;
        let heads = cx.cfg.heads as usize;
        let dim_head = cx.cfg.dim_head as usize;
        let inner = heads * dim_head;
        let scale = |cx: &mut Ctx, name: &str| -> Result<Value> {
            let k = key(prefix, name);
            let v = cx.w.get(&k, &[dim_head])?;
            cx.g.initializer_f32(&k, &[dim_head as i64], &v)
        };
        let q_scale = scale(cx, "q_scale")?;
        let k_scale = scale(cx, "k_scale")?;
        // Only applied by the math semantics, on spatial blocks; the weights exist whenever
        // the block was built with `rel`.
        let rel_pos_bias = if spatial_pos == SpatialPos::Rel {
            let p = key(prefix, "spatial_rel_pos_bias");
            if cx.semantics == AttentionSemantics::Math && is_spatial {
                Some(ContinuousPositionBias::load(cx, &p)?)
            } else {
                for k in [
                    "net.0.0.weight",
                    "net.0.0.bias",
                    "net.1.0.weight",
                    "net.1.0.bias",
                    "net.2.weight",
                    "net.2.bias",
                ] {
                    cx.w.expect_unused(&key(&p, k));
                }
                None
            }
        } else {
            None
        };
        // `context_norm` serves cross-attention, which these transformers do not have.
        cx.w.expect_unused(&key(prefix, "context_norm.gamma"));
        cx.w.expect_unused(&key(prefix, "context_norm.beta"));
        Ok(Attention {
            norm: LayerNorm::load(cx, &key(prefix, "norm"), dim, NormKeys::GammaBeta)?,
            rope: spatial_pos == SpatialPos::Rope,
            is_spatial,
            to_q: Linear::load(cx, &key(prefix, "to_q"), dim, inner, false)?,
            to_k: Linear::load_rows(cx, &key(prefix, "to_kv"), dim, 2 * inner, 0, inner, false)?,
            to_v: Linear::load_rows(cx, &key(prefix, "to_kv"), dim, 2 * inner, inner, 2 * inner, false)?,
            q_scale,
            k_scale,
            to_out: Linear::load(cx, &key(prefix, "to_out"), inner, dim, false)?,
            rel_pos_bias,
            causal,
            heads,
            dim_head,
        })
    }

    /// `x`: `[n_seq, seq, dim]`.
    pub fn forward(&self, cx: &mut Ctx, x: &Value, shape: &VideoShape) -> Result<Value> {
        let is_spatial = self.is_spatial;
        // As in the official forward, K and V come from the input *before* the LayerNorm
        // (`kv_input` is taken ahead of `x = self.norm(x)`); only Q sees the normalised input.
        let normed = self.norm.forward(cx, x)?;
        let q = self.to_q.forward(cx, &normed)?;
        let k = self.to_k.forward(cx, x)?;
        let v = self.to_v.forward(cx, x)?;
        let (b, n) = (x.dim(0), x.dim(1));
        let per_head = [
            b.clone(),
            n.clone(),
            Dim::Fixed(self.heads as i64),
            Dim::Fixed(self.dim_head as i64),
        ];
        let mut q = cx.g.reshape(&q, &per_head)?;
        let mut k = cx.g.reshape(&k, &per_head)?;
        if is_spatial && self.rope {
            let (cos, sin) = rope_tables(cx, &shape.h, &shape.w, self.dim_head)?;
            q = apply_rope(cx, &q, &cos, &sin)?;
            k = apply_rope(cx, &k, &cos, &sin)?;
        }
        let q = l2norm_scaled(cx, &q, &self.q_scale)?;
        let k = l2norm_scaled(cx, &k, &self.k_scale)?;
        let flat = [b, n, Dim::Fixed((self.heads * self.dim_head) as i64)];
        let q = cx.g.reshape(&q, &flat)?;
        let k = cx.g.reshape(&k, &flat)?;

        let bias = match cx.semantics {
            AttentionSemantics::Math if is_spatial => match &self.rel_pos_bias {
                Some(m) => Some(cx.scoped("spatial_rel_pos_bias", |cx| m.forward(cx, &shape.h, &shape.w))?),
                None => None,
            },
            AttentionSemantics::Math if self.causal => Some(cx.scoped("alibi", |cx| alibi_causal_bias(cx, &x.dim(1)))?),
            _ => None,
        };
        let causal = self.causal && bias.is_none();
        let out = scaled_dot_product(
            cx,
            Sdpa {
                heads: self.heads,
                scale: 8.0,
                causal,
            },
            &q,
            &k,
            &v,
            bias.as_ref(),
        )?;
        self.to_out.forward(cx, &out)
    }
}

/// `l2norm(t) * scale` over the head channels.
fn l2norm_scaled(cx: &mut Ctx, x: &Value, scale: &Value) -> Result<Value> {
    let x = l2_normalize(cx, x)?;
    cx.g.mul(&x, scale)
}

/// Multi-head scaled dot-product attention over 3-D `[b, n, heads*d]` inputs.
pub struct Sdpa {
    pub heads: usize,
    pub scale: f32,
    pub causal: bool,
}

/// `softmax(q k^T * scale + bias) v` per head; `Attention` opset 23, or
/// `com.microsoft.MultiHeadAttention` when there is neither bias nor causal mask.
pub fn scaled_dot_product(
    cx: &mut Ctx,
    spec: Sdpa,
    q: &Value,
    k: &Value,
    v: &Value,
    bias: Option<&Value>,
) -> Result<Value> {
    let Sdpa { heads, scale, causal } = spec;
    let g = &mut *cx.g;
    if bias.is_none() && !causal {
        // com.microsoft.MultiHeadAttention without mask or bias stays on ORT's flash path.
        return g.ms_node(
            "MultiHeadAttention",
            &[Some(q), Some(k), Some(v)],
            vec![
                AttributeProto::int("num_heads", heads as i64),
                AttributeProto::float("scale", scale),
            ],
            DType::F32,
            q.dims.clone(),
        );
    }
    let mut inputs = vec![Some(q), Some(k), Some(v)];
    if let Some(b) = bias {
        inputs.push(Some(b));
    }
    let mut out = g.node_opt(
        "",
        "Attention",
        &inputs,
        vec![
            AttributeProto::int("q_num_heads", heads as i64),
            AttributeProto::int("kv_num_heads", heads as i64),
            AttributeProto::int("is_causal", causal as i64),
            AttributeProto::float("scale", scale),
        ],
        &[(DType::F32, q.dims.clone())],
    )?;
    Ok(out.remove(0))
}
