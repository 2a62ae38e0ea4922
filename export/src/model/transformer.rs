//! `Transformer`: a stack of `t` blocks (PEG, Attention, FeedForward) and `w` blocks
//! (WindowAttention, FeedForward), each with residuals, and a final LayerNorm whose
//! bias is the stored `beta` buffer.

use anyhow::Result;

use super::attention::Attention;
use super::feed_forward::FeedForward;
use super::nn::{LayerNorm, NormKeys};
use super::peg::Peg;
use super::window_attention::WindowAttention;
use super::{Ctx, ModulePath, VideoShape};
use crate::config::SpatialPos;
use crate::graph::Value;

/// The slots of each layer, `nn.ModuleList([peg, self_attn, cross_attn, ff])`. Slot 2,
/// cross-attention, is `None` in every tokenizer transformer (`has_cross_attn=False`).
const PEG: usize = 0;
const SELF_ATTN: usize = 1;
const FEED_FORWARD: usize = 3;

#[allow(clippy::large_enum_variant)] // a handful per model, built once
enum Block {
    T { peg: Peg, attn: Attention, ff: FeedForward },
    W { attn: WindowAttention, ff: FeedForward },
}

pub struct Transformer {
    path: ModulePath,
    blocks: Vec<Block>,
    norm_out: LayerNorm,
}

impl Transformer {
    /// A spatial transformer (`block` from the config, the model's `spatial_pos`) or a
    /// temporal one (`'t' * temporal_depth`, causal when `causal_in_temporal_transformer`).
    pub fn load(cx: &mut Ctx, path: ModulePath, block: &str, is_spatial: bool) -> Result<Self> {
        let (spatial_pos, causal) = if is_spatial {
            (cx.cfg.spatial_pos, false)
        } else {
            (SpatialPos::Rel, cx.cfg.causal_in_temporal_transformer)
        };
        let mut blocks = Vec::new();
        for (i, kind) in block.chars().enumerate() {
            let layer = path.item("layers", i);
            blocks.push(match kind {
                't' => Block::T {
                    peg: Peg::load(cx, layer.child(PEG))?,
                    attn: Attention::load(cx, layer.child(SELF_ATTN), spatial_pos, causal, is_spatial)?,
                    ff: FeedForward::load(cx, layer.child(FEED_FORWARD))?,
                },
                'w' => Block::W {
                    attn: WindowAttention::load(cx, layer.child(SELF_ATTN))?,
                    ff: FeedForward::load(cx, layer.child(FEED_FORWARD))?,
                },
                other => anyhow::bail!("block '{other}' is not supported"),
            });
        }
        let dim = cx.cfg.embedding_dim as usize;
        Ok(Transformer {
            blocks,
            norm_out: LayerNorm::load(cx, path.child("norm_out"), dim, NormKeys::GammaBeta)?,
            path,
        })
    }

    /// The official forward: residual blocks, then `norm_out`.
    pub fn forward(&self, cx: &mut Ctx, x: &Value, shape: &VideoShape) -> Result<Value> {
        let mut x = x.clone();
        for (i, block) in self.blocks.iter().enumerate() {
            let (a, ff) = match block {
                Block::T { peg, attn, ff } => {
                    let p = peg.forward(cx, &x, shape)?;
                    x = self.residual(cx, i, &p, &x)?;
                    (attn.forward(cx, &x, shape)?, ff)
                }
                Block::W { attn, ff } => (attn.forward(cx, &x, shape)?, ff),
            };
            x = self.residual(cx, i, &a, &x)?;
            let f = ff.forward(cx, &x)?;
            x = self.residual(cx, i, &f, &x)?;
        }
        self.norm_out.forward(cx, &x)
    }

    /// `y + x` in layer `i`'s scope.
    fn residual(&self, cx: &mut Ctx, i: usize, y: &Value, x: &Value) -> Result<Value> {
        cx.enter(&self.path.item("layers", i), |cx| cx.g.add(y, x))
    }
}
