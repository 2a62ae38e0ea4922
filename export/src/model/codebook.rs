//! `Codebook`: the encoder's nearest-code search (squared distance to the L2-normalised
//! latent, codebook used as stored, ties to the lowest index) and the decoder's lookup.

use anyhow::Result;

use super::Ctx;
use crate::graph::Value;

fn embeddings<'w>(cx: &Ctx<'w>) -> Result<(std::borrow::Cow<'w, [f32]>, usize, usize)> {
    let n = cx.cfg.n_codes as usize;
    let c = cx.cfg.codebook_dim as usize;
    Ok((cx.w.get("codebook.embeddings", &[n, c])?, n, c))
}

/// Encoder side: `argmin_k ||z - e_k||^2`.
pub struct Quantizer {
    /// `-2 E^T`, `[C, n_codes]`
    neg2_et: Value,
    /// `||e_k||^2`, `[n_codes]`
    sq_norms: Value,
}

impl Quantizer {
    pub fn load(cx: &mut Ctx) -> Result<Self> {
        let (e, n, c) = embeddings(cx)?;
        let mut t = vec![0f32; c * n];
        let mut sq = vec![0f32; n];
        for k in 0..n {
            for j in 0..c {
                let v = e[k * c + j];
                t[j * n + k] = -2.0 * v;
                sq[k] += v * v;
            }
        }
        Ok(Quantizer {
            neg2_et: cx
                .g
                .initializer_f32("codebook.embeddings[-2T]", &[c as i64, n as i64], &t)?,
            sq_norms: cx
                .g
                .initializer_f32("codebook.embeddings[sq_norms]", &[n as i64], &sq)?,
        })
    }

    /// `z`: `[..., C]` normalised latents -> indices `[...]`. `||z||^2` is the same for every
    /// code of a row, so `argmin ||e||^2 - 2 z.e` picks the official code.
    pub fn forward(&self, cx: &mut Ctx, z: &Value) -> Result<Value> {
        let d = cx.g.matmul(z, &self.neg2_et)?;
        let d = cx.g.add(&d, &self.sq_norms)?;
        cx.g.argmin(&d, -1)
    }
}

/// Decoder side: indices `[...]` -> codes `[..., C]` (`F.embedding`).
pub struct Lookup {
    embeddings: Value,
}

impl Lookup {
    pub fn load(cx: &mut Ctx) -> Result<Self> {
        let (e, n, c) = embeddings(cx)?;
        Ok(Lookup {
            embeddings: cx.g.initializer_f32("codebook.embeddings", &[n as i64, c as i64], &e)?,
        })
    }

    pub fn forward(&self, cx: &mut Ctx, indices: &Value) -> Result<Value> {
        cx.g.gather(&self.embeddings, indices)
    }
}
