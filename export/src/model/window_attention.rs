//! `WindowAttention` (the `w` blocks): its own LayerNorm, non-overlapping windows of
//! `twod_window_size`², a fused bias-free QKV projection, scale `head_dim^-0.5`, a learned
//! relative-position bias table, an output projection with bias; no Q/K normalisation.

use anyhow::Result;

use super::nn::{LayerNorm, Linear, NormKeys};
use super::{Ctx, ModulePath, VideoShape};
use crate::graph::{Dim, Graph, Heads, Value};

pub struct WindowAttention {
    path: ModulePath,
    norm: LayerNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    proj: Linear,
    bias: Value,
    window: i64,
    heads: usize,
    scale: f32,
}

/// `relative_position_index` of the official module: for tokens i, j of a window,
/// `(dy + ws - 1) * (2ws - 1) + (dx + ws - 1)`.
pub fn relative_position_index(ws: usize) -> Vec<usize> {
    let n = ws * ws;
    let mut idx = vec![0; n * n];
    for i in 0..n {
        for j in 0..n {
            let dy = (i / ws) as isize - (j / ws) as isize + ws as isize - 1;
            let dx = (i % ws) as isize - (j % ws) as isize + ws as isize - 1;
            idx[i * n + j] = (dy * (2 * ws as isize - 1) + dx) as usize;
        }
    }
    idx
}

/// The official `window_partition` on channels-last tokens `[B, h * w, C]` of an
/// `h x w` grid: `[B * nW, ws * ws, C]`, windows in row-major order.
pub fn window_partition(g: &mut Graph, x: &Value, h: &Dim, w: &Dim, ws: i64) -> Result<Value> {
    let (b, c) = (x.dim(0), x.dim(-1));
    let win = Dim::Fixed(ws);
    let (nh, nw) = (g.dim_div(h, &win)?, g.dim_div(w, &win)?);
    // (B, h, w, C) -> (B, h/ws, ws, w/ws, ws, C) -> (B, h/ws, w/ws, ws, ws, C)
    let v = g.reshape(x, &[b.clone(), nh.clone(), win.clone(), nw.clone(), win, c.clone()])?;
    let v = g.transpose(&v, &[0, 1, 3, 2, 4, 5])?;
    let windows = g.dim_mul(&b, &nh)?;
    let windows = g.dim_mul(&windows, &nw)?;
    g.reshape(&v, &[windows, Dim::Fixed(ws * ws), c])
}

/// The official `window_reverse`: windows `[B * nW, ws * ws, C]` back to the grid's
/// tokens `[B, h * w, C]`.
pub fn window_reverse(g: &mut Graph, windows: &Value, b: &Dim, h: &Dim, w: &Dim, ws: i64) -> Result<Value> {
    let c = windows.dim(-1);
    let win = Dim::Fixed(ws);
    let (nh, nw) = (g.dim_div(h, &win)?, g.dim_div(w, &win)?);
    // (B, h/ws, w/ws, ws, ws, C) -> (B, h/ws, ws, w/ws, ws, C) -> (B, h * w, C)
    let v = g.reshape(windows, &[b.clone(), nh, nw, win.clone(), win, c.clone()])?;
    let v = g.transpose(&v, &[0, 1, 3, 2, 4, 5])?;
    let hw = g.dim_mul(h, w)?;
    g.reshape(&v, &[b.clone(), hw, c])
}

impl WindowAttention {
    pub fn load(cx: &mut Ctx, path: ModulePath) -> Result<Self> {
        let dim = cx.cfg.embedding_dim as usize;
        let heads = cx.cfg.heads as usize;
        let ws = cx.cfg.twod_window_size as usize;
        let head_dim = dim / heads;
        let qkv = path.child("qkv");
        // The bias depends only on the window: gather it from the table at export time.
        let table_len = (2 * ws - 1) * (2 * ws - 1);
        let tkey = path.key("relative_position_bias_table");
        let table = cx.w.get(&tkey, &[table_len, heads])?;
        let n = ws * ws;
        let index = relative_position_index(ws);
        let mut bias = vec![0f32; heads * n * n];
        for h in 0..heads {
            for (ij, &t) in index.iter().enumerate() {
                bias[h * n * n + ij] = table[t * heads + h];
            }
        }
        let bias = cx.g.initializer_f32(
            &format!("{tkey}[relative_position_index]"),
            &[1, heads as i64, n as i64, n as i64],
            &bias,
        )?;
        cx.w.expect_unused(&path.key("relative_position_index"));
        Ok(WindowAttention {
            norm: LayerNorm::load(cx, path.child("norm"), dim, NormKeys::GammaBeta)?,
            q: Linear::load_rows(cx, qkv.clone(), dim, 3 * dim, 0, dim, false)?,
            k: Linear::load_rows(cx, qkv.clone(), dim, 3 * dim, dim, 2 * dim, false)?,
            v: Linear::load_rows(cx, qkv, dim, 3 * dim, 2 * dim, 3 * dim, false)?,
            proj: Linear::load(cx, path.child("proj"), dim, dim, true)?,
            path,
            bias,
            window: ws as i64,
            heads,
            scale: (head_dim as f32).powf(-0.5),
        })
    }

    /// `x`: `[(b t), (h w), d]`.
    pub fn forward(&self, cx: &mut Ctx, x: &Value, shape: &VideoShape) -> Result<Value> {
        cx.enter(&self.path, |cx| self.trace(cx, x, shape))
    }

    fn trace(&self, cx: &mut Ctx, x: &Value, shape: &VideoShape) -> Result<Value> {
        let x = self.norm.forward(cx, x)?;
        let win = window_partition(cx.g, &x, &shape.h, &shape.w, self.window)?;
        let q = self.q.forward(cx, &win)?;
        let k = self.k.forward(cx, &win)?;
        let v = self.v.forward(cx, &win)?;
        let heads = Heads {
            count: self.heads,
            scale: self.scale,
        };
        let out = cx.g.attention(&q, &k, &v, Some(&self.bias), heads, false)?;
        let out = self.proj.forward(cx, &out)?;
        window_reverse(cx.g, &out, &x.dim(0), &shape.h, &shape.w, self.window)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn relative_position_index_matches_the_swin_formula() {
        let idx = super::relative_position_index(2);
        // ws = 2: 4 tokens, offsets in [-1, 1]^2, table of 9
        assert_eq!(idx[0], 4); // same token: (0+1)*3 + (0+1)
        assert_eq!(idx[1], 3); // (0,0) vs (0,1): dx = -1
        assert_eq!(idx[3], 0); // (0,0) vs (1,1)
        assert_eq!(idx[3 * 4], 8); // (1,1) vs (0,0)
    }
}
