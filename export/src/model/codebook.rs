//! `Codebook`: the encoder's nearest-code search (squared distance to the L2-normalised
//! latent, codebook used as stored, ties to the lowest index) and the decoder's lookup
//! (`F.embedding(encodings, codebook.embeddings)`).

use std::borrow::Cow;

use anyhow::Result;

use super::{Ctx, ModulePath};
use crate::graph::Value;

/// `codebook.embeddings`, `[n_codes, codebook_dim]`.
fn embeddings<'w>(cx: &Ctx<'w>, path: &ModulePath) -> Result<(Cow<'w, [f32]>, usize, usize)> {
    let n = cx.cfg.n_codes as usize;
    let c = cx.cfg.codebook_dim as usize;
    Ok((cx.w.get(&path.key("embeddings"), &[n, c])?, n, c))
}

/// Encoder side: `argmin_k ||z - e_k||^2`.
pub struct Quantizer {
    path: ModulePath,
    /// `-2 E^T`, `[C, n_codes]`
    neg2_et: Value,
    /// `||e_k||^2`, `[n_codes]`
    sq_norms: Value,
}

impl Quantizer {
    pub fn load(cx: &mut Ctx, path: ModulePath) -> Result<Self> {
        let (e, n, c) = embeddings(cx, &path)?;
        let mut t = vec![0f32; c * n];
        let mut sq = vec![0f32; n];
        for k in 0..n {
            for j in 0..c {
                let v = e[k * c + j];
                t[j * n + k] = -2.0 * v;
                sq[k] += v * v;
            }
        }
        let key = path.key("embeddings");
        Ok(Quantizer {
            neg2_et: cx
                .g
                .initializer_f32(&format!("{key}[-2T]"), &[c as i64, n as i64], &t)?,
            sq_norms: cx.g.initializer_f32(&format!("{key}[sq_norms]"), &[n as i64], &sq)?,
            path,
        })
    }

    /// `z`: `[..., C]` normalised latents -> indices `[...]`. `||z||^2` is the same for every
    /// code of a row, so `argmin ||e||^2 - 2 z.e` picks the official code.
    pub fn forward(&self, cx: &mut Ctx, z: &Value) -> Result<Value> {
        cx.enter(&self.path, |cx| {
            let d = cx.g.matmul(z, &self.neg2_et)?;
            let d = cx.g.add(&d, &self.sq_norms)?;
            cx.g.argmin(&d, -1)
        })
    }
}

/// Decoder side: indices `[...]` -> codes `[..., C]`.
pub struct Lookup {
    path: ModulePath,
    embeddings: Value,
}

impl Lookup {
    pub fn load(cx: &mut Ctx, path: ModulePath) -> Result<Self> {
        let (e, n, c) = embeddings(cx, &path)?;
        let embeddings =
            cx.g.initializer_f32(&path.key("embeddings"), &[n as i64, c as i64], &e)?;
        Ok(Lookup { path, embeddings })
    }

    pub fn forward(&self, cx: &mut Ctx, indices: &Value) -> Result<Value> {
        cx.enter(&self.path, |cx| cx.g.gather(&self.embeddings, indices))
    }
}
