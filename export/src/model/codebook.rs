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
    /// `-2 E^T` with `||e_k||^2` as one more row, `[C + 1, n_codes]`
    distances: Value,
}

impl Quantizer {
    pub fn load(cx: &mut Ctx, path: ModulePath) -> Result<Self> {
        let (e, n, c) = embeddings(cx, &path)?;
        // rows 0..c: -2 E^T; row c: ||e_k||^2
        let mut t = vec![0f32; (c + 1) * n];
        for k in 0..n {
            let mut sq = 0f32;
            for j in 0..c {
                let v = e[k * c + j];
                t[j * n + k] = -2.0 * v;
                sq += v * v;
            }
            t[c * n + k] = sq;
        }
        let key = path.key("embeddings");
        Ok(Quantizer {
            distances: cx
                .g
                .initializer_f32(&format!("{key}[-2T;sq_norms]"), &[c as i64 + 1, n as i64], &t)?,
            path,
        })
    }

    /// `z`: `[..., C]` normalised latents -> indices `[...]`. `||z||^2` is the same for every
    /// code of a row, so `argmin ||e||^2 - 2 z.e` picks the official code; `[z, 1]` times
    /// `[-2 E^T; ||e||^2]` is that sum in one MatMul (the squared norms are its last term, so
    /// the float32 result is the MatMul-then-Add one, bit for bit, without a pass over the
    /// `[..., n_codes]` distances).
    pub fn forward(&self, cx: &mut Ctx, z: &Value) -> Result<Value> {
        cx.enter(&self.path, |cx| {
            let z1 = cx.g.pad_last(z, 1, 1.0)?;
            let d = cx.g.matmul(&z1, &self.distances)?;
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
