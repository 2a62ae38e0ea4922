//! Position encodings of the official attention: 2-D RoPE (`precompute_freqs_cis_2d`,
//! `apply_rotary_emb`), the relative-position MLP (`ContinuousPositionBias`) and ALiBi
//! (`AlibiPositionalBias`). Tables are computed inside the graph from the symbolic grid
//! size, so one graph serves every frame size, square or not.

use anyhow::Result;

use super::nn::Linear;
use super::{Ctx, ModulePath};
use crate::graph::{DType, Dim, Graph, Value};

/// RoPE frequencies for a head of `dim_head` channels: `10000^(-4i/d)`, `i < d/4`.
pub fn rope_frequencies(dim_head: usize) -> Vec<f32> {
    (0..dim_head / 4)
        .map(|i| 1.0f32 / 10000f32.powf((4 * i) as f32 / dim_head as f32))
        .collect()
}

/// `cos` and `sin` of the rotation angle of every channel pair, shaped `[h*w, d/2]`: pair
/// `j` (channels `2j`, `2j+1`) rotates by `col * f[j/2]` when j is even and by
/// `row * f[j/2]` when j is odd; token n of the frame has `col = n % w`, `row = n / w`.
pub fn rope_tables(cx: &mut Ctx, h: &Dim, w: &Dim, dim_head: usize) -> Result<(Value, Value)> {
    let g = &mut *cx.g;
    let f = rope_frequencies(dim_head);
    let pairs = dim_head / 2;
    let per_pair = |col: bool| -> Vec<f32> {
        (0..pairs)
            .map(|j| if (j % 2 == 0) == col { f[j / 2] } else { 0.0 })
            .collect()
    };
    let fx = g.const_f32(&[pairs as i64], &per_pair(true))?;
    let fy = g.const_f32(&[pairs as i64], &per_pair(false))?;
    let cols = g.range(w)?;
    let cols = g.cast(&cols, DType::F32)?;
    let cols = g.reshape(&cols, &[Dim::Fixed(1), w.clone(), Dim::Fixed(1)])?;
    let rows = g.range(h)?;
    let rows = g.cast(&rows, DType::F32)?;
    let rows = g.reshape(&rows, &[h.clone(), Dim::Fixed(1), Dim::Fixed(1)])?;
    let a = g.mul(&cols, &fx)?; // [1, w, d/2]
    let b = g.mul(&rows, &fy)?; // [h, 1, d/2]
    let angle = g.add(&a, &b)?; // [h, w, d/2]: adding exact zeros keeps each angle exact
    let n = g.dim_mul(h, w)?;
    let angle = g.reshape(&angle, &[n, Dim::Fixed(pairs as i64)])?;
    Ok((g.cos(&angle)?, g.sin(&angle)?))
}

/// The positions `0..n` of one frame's tokens for every row of a batch of `b`: `[b, n]` int64,
/// as `RotaryEmbedding` takes them (its tables are indexed by position).
pub fn rope_positions(cx: &mut Ctx, b: &Dim, n: &Dim) -> Result<Value> {
    let g = &mut *cx.g;
    let positions = g.range(n)?;
    let positions = g.unsqueeze(&positions, &[0])?;
    g.expand(&positions, &[b.clone(), n.clone()])
}

/// Rotates `x` (`[b, n, heads * d]`, the tokens of one frame) by the tables: channel pairs
/// `(2j, 2j+1)` of each head are the complex numbers `a + ib` of the official
/// `apply_rotary_emb`, multiplied by `cos + i sin` of token n's angle, i.e.
/// `(a cos - b sin, b cos + a sin)` (one `RotaryEmbedding` node; `positions` from
/// [`rope_positions`]).
pub fn apply_rope(cx: &mut Ctx, x: &Value, cos: &Value, sin: &Value, positions: &Value, heads: usize) -> Result<Value> {
    cx.g.rotary_embedding(x, cos, sin, positions, heads)
}

/// `ContinuousPositionBias`: an MLP over log-scaled 2-D offsets, one logit bias per head.
pub struct ContinuousPositionBias {
    path: ModulePath,
    net: [Linear; 3],
}

impl ContinuousPositionBias {
    /// The linear layers of `net`, a ModuleList of `Sequential(Linear, LeakyReLU)`,
    /// `Sequential(Linear, LeakyReLU)` and a `Linear`.
    fn layers(path: &ModulePath) -> [ModulePath; 3] {
        let net = |i| path.item("net", i);
        [net(0).child(0), net(1).child(0), net(2)]
    }

    pub fn load(cx: &mut Ctx, path: ModulePath) -> Result<Self> {
        let dim = cx.cfg.embedding_dim as usize;
        let heads = cx.cfg.heads as usize;
        let [l0, l1, l2] = Self::layers(&path);
        Ok(ContinuousPositionBias {
            net: [
                Linear::load(cx, l0, 2, dim, true)?,
                Linear::load(cx, l1, dim, dim, true)?,
                Linear::load(cx, l2, dim, heads, true)?,
            ],
            path,
        })
    }

    /// Marks the weights of a bias the graph does not apply as expected.
    pub fn expect_unused(cx: &mut Ctx, path: &ModulePath) {
        for layer in Self::layers(path) {
            cx.w.expect_unused(&layer.key("weight"));
            cx.w.expect_unused(&layer.key("bias"));
        }
    }

    /// The bias `[1, heads, h*w, h*w]`. The MLP runs once per distinct offset
    /// (`(2h-1) x (2w-1)` of them) and is gathered into the `N x N` matrix: the same values
    /// as running it on every pair, as the official code does, at a fraction of the cost.
    pub fn forward(&self, cx: &mut Ctx, h: &Dim, w: &Dim) -> Result<Value> {
        cx.enter(&self.path, |cx| self.trace(cx, h, w))
    }

    fn trace(&self, cx: &mut Ctx, h: &Dim, w: &Dim) -> Result<Value> {
        let one = Dim::Fixed(1);
        let two = Dim::Fixed(2);
        // offsets -(n-1) ..= n-1 along each axis, log-scaled: sign(d) * log(|d| + 1)
        let mut offsets = |n: &Dim| -> Result<(Value, Dim)> {
            let g = &mut *cx.g;
            let span = g.dim_mul(n, &two)?;
            let span = g.dim_sub(&span, &one)?;
            let r = g.range(&span)?;
            let nm1 = g.dim_sub(n, &one)?;
            let nm1 = g.dim_tensor(&nm1)?;
            let d = g.sub(&r, &nm1)?;
            let d = g.cast(&d, DType::F32)?;
            let s = g.sign(&d)?;
            let a = g.abs(&d)?;
            let one_f = g.scalar_f32(1.0)?;
            let a = g.add(&a, &one_f)?;
            let l = g.log(&a)?;
            Ok((g.mul(&s, &l)?, span))
        };
        let (dy, sy) = offsets(h)?;
        let (dx, sx) = offsets(w)?;
        let g = &mut *cx.g;
        let dy = g.reshape(&dy, &[sy.clone(), one.clone(), one.clone()])?;
        let dx = g.reshape(&dx, &[one.clone(), sx.clone(), one.clone()])?;
        let ey = g.const_f32(&[2], &[1.0, 0.0])?;
        let ex = g.const_f32(&[2], &[0.0, 1.0])?;
        let gy = g.mul(&dy, &ey)?;
        let gx = g.mul(&dx, &ex)?;
        let grid = g.add(&gy, &gx)?; // [2h-1, 2w-1, 2] = (dy, dx)
        let m = g.dim_mul(&sy, &sx)?;
        let mut x = g.reshape(&grid, &[m, Dim::Fixed(2)])?;
        for (i, layer) in self.net.iter().enumerate() {
            x = layer.forward(cx, &x)?;
            if i < 2 {
                x = cx.g.leaky_relu(&x, 0.1)?;
            }
        }
        let table = x; // [(2h-1)(2w-1), heads]

        // index[i, j] = (yi - yj + h - 1) * (2w - 1) + (xi - xj + w - 1)
        let g = &mut *cx.g;
        let n = g.dim_mul(h, w)?;
        let idx = g.range(&n)?;
        let wt = g.dim_tensor(w)?;
        let rows = g.div(&idx, &wt)?;
        let cols = g.modulo(&idx, &wt)?;
        let rel = |g: &mut Graph, v: &Value, extent: &Dim| -> Result<Value> {
            let a = g.reshape(v, &[n.clone(), Dim::Fixed(1)])?;
            let b = g.reshape(v, &[Dim::Fixed(1), n.clone()])?;
            let d = g.sub(&a, &b)?;
            let e = g.dim_sub(extent, &Dim::Fixed(1))?;
            let e = g.dim_tensor(&e)?;
            g.add(&d, &e)
        };
        let ry = rel(g, &rows, h)?;
        let rx = rel(g, &cols, w)?;
        let sxt = g.dim_tensor(&sx)?;
        let ry = g.mul(&ry, &sxt)?;
        let index = g.add(&ry, &rx)?; // [N, N]
        let bias = g.gather(&table, &index)?; // [N, N, heads]
        let bias = g.transpose(&bias, &[2, 0, 1])?;
        g.unsqueeze(&bias, &[0])
    }
}

/// ALiBi slopes per head, with the paper's rule for head counts that are not powers of two.
pub fn alibi_slopes(heads: usize) -> Vec<f32> {
    fn pow2(n: usize) -> Vec<f64> {
        let start = 2f64.powf(-(2f64.powf(-((n as f64).log2() - 3.0))));
        (0..n).map(|i| start * start.powi(i as i32)).collect()
    }
    let slopes = if (heads as f64).log2().fract() == 0.0 {
        pow2(heads)
    } else {
        let closest = 2usize.pow((heads as f64).log2().floor() as u32);
        let mut s = pow2(closest);
        s.extend(pow2(2 * closest).into_iter().step_by(2).take(heads - closest));
        s
    };
    slopes.into_iter().map(|s| s as f32).collect()
}

/// `AlibiPositionalBias` of a causal block, with the causal mask folded in.
pub struct AlibiPositionalBias {
    path: ModulePath,
    heads: usize,
}

impl AlibiPositionalBias {
    pub fn new(path: ModulePath, heads: usize) -> Self {
        AlibiPositionalBias { path, heads }
    }

    /// ALiBi plus the causal mask as one additive bias `[1, heads, t, t]`:
    /// `-|i - j| * slope[h]` on and below the diagonal, `-f32::MAX` above it.
    pub fn forward(&self, cx: &mut Ctx, t: &Dim) -> Result<Value> {
        cx.enter(&self.path, |cx| {
            let g = &mut *cx.g;
            let r = g.range(t)?;
            let r = g.cast(&r, DType::F32)?;
            let i = g.reshape(&r, &[t.clone(), Dim::Fixed(1)])?;
            let j = g.reshape(&r, &[Dim::Fixed(1), t.clone()])?;
            let diff = g.sub(&j, &i)?; // j - i
            let dist = g.abs(&diff)?;
            let dist = g.neg(&dist)?;
            let slopes = g.const_f32(&[self.heads as i64, 1, 1], &alibi_slopes(self.heads))?;
            let alibi = g.mul(&dist, &slopes)?; // [heads, t, t]
            let zero = g.scalar_f32(0.0)?;
            let future = g.greater(&diff, &zero)?;
            let masked = g.scalar_f32(-f32::MAX)?;
            let bias = g.where_(&future, &masked, &alibi)?;
            g.unsqueeze(&bias, &[0])
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alibi_slopes_match_the_paper() {
        assert_eq!(
            alibi_slopes(8),
            vec![0.5, 0.25, 0.125, 0.0625, 0.03125, 0.015625, 0.0078125, 0.00390625]
        );
        assert_eq!(alibi_slopes(2), vec![0.0625, 0.00390625]);
        // 6 heads: the 4 of a power of two, then every other of the 8-head series
        let s = alibi_slopes(6);
        assert_eq!(s.len(), 6);
        assert_eq!(&s[..4], &alibi_slopes(4)[..]);
        assert_eq!(s[4], alibi_slopes(8)[0]);
        assert_eq!(s[5], alibi_slopes(8)[2]);
    }

    #[test]
    fn rope_frequencies_follow_the_official_formula() {
        let f = rope_frequencies(64);
        assert_eq!(f.len(), 16);
        assert_eq!(f[0], 1.0);
        assert!((f[1] - 10000f32.powf(-4.0 / 64.0)).abs() < 1e-9);
    }
}
