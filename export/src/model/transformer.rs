//! `Transformer`: a stack of `t` blocks (PEG, Attention, FeedForward) and `w` blocks
//! (WindowAttention, FeedForward), each with residuals, and a final LayerNorm whose
//! bias is the stored `beta` buffer.

use anyhow::Result;

use super::attention::Attention;
use super::feed_forward::FeedForward;
use super::nn::{LayerNorm, NormKeys};
use super::peg::Peg;
use super::window_attention::WindowAttention;
use super::{Ctx, VideoShape, key};
use crate::config::SpatialPos;
use crate::graph::Value;

#[allow(clippy::large_enum_variant)] // a handful per model, built once
enum Block {
    T { peg: Peg, attn: Attention, ff: FeedForward },
    W { attn: WindowAttention, ff: FeedForward },
}

pub struct Transformer {
    blocks: Vec<Block>,
    norm_out: LayerNorm,
}

impl Transformer {
    /// A spatial transformer (`block` from the config, the model's `spatial_pos`) or a
    /// temporal one (`'t' * temporal_depth`, causal when `causal_in_temporal_transformer`).
    pub fn load(cx: &mut Ctx, prefix: &str, block: &str, is_spatial: bool) -> Result<Self> {
        let (spatial_pos, causal) = if is_spatial {
            (cx.cfg.spatial_pos, false)
        } else {
            (SpatialPos::Rel, cx.cfg.causal_in_temporal_transformer)
        };
        let mut blocks = Vec::new();
        for (i, kind) in block.chars().enumerate() {
            let p = key(prefix, &format!("layers.{i}"));
            blocks.push(match kind {
                't' => Block::T {
                    peg: Peg::load(cx, &key(&p, "0"))?,
                    attn: Attention::load(cx, &key(&p, "1"), spatial_pos, causal, is_spatial)?,
                    ff: FeedForward::load(cx, &key(&p, "3"))?,
                },
                'w' => Block::W {
                    attn: WindowAttention::load(cx, &key(&p, "1"))?,
                    ff: FeedForward::load(cx, &key(&p, "3"))?,
                },
                other => anyhow::bail!("block '{other}' is not supported"),
            });
        }
        let dim = cx.cfg.embedding_dim as usize;
        Ok(Transformer {
            blocks,
            norm_out: LayerNorm::load(cx, &key(prefix, "norm_out"), dim, NormKeys::GammaBeta)?,
        })
    }

    pub fn forward(&self, cx: &mut Ctx, x: &Value, shape: &VideoShape) -> Result<Value> {
        let mut x = x.clone();
        for (i, block) in self.blocks.iter().enumerate() {
            x = cx.scoped(&format!("layers.{i}"), |cx| -> Result<Value> {
                let mut x = x.clone();
                match block {
                    Block::T { peg, attn, ff } => {
                        let p = cx.scoped("0", |cx| peg.forward(cx, &x, shape))?;
                        x = cx.g.add(&p, &x)?;
                        let a = cx.scoped("1", |cx| attn.forward(cx, &x, shape))?;
                        x = cx.g.add(&a, &x)?;
                        let f = cx.scoped("3", |cx| ff.forward(cx, &x))?;
                        cx.g.add(&f, &x)
                    }
                    Block::W { attn, ff } => {
                        let a = cx.scoped("1", |cx| attn.forward(cx, &x, shape))?;
                        x = cx.g.add(&a, &x)?;
                        let f = cx.scoped("3", |cx| ff.forward(cx, &x))?;
                        cx.g.add(&f, &x)
                    }
                }
            })?;
        }
        cx.scoped("norm_out", |cx| self.norm_out.forward(cx, &x))
    }
}
