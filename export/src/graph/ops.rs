//! One typed function per ONNX operator we emit, each computing its output shape.

use anyhow::{Result, ensure};

use super::{DType, Dim, Graph, Value};
use crate::onnx::AttributeProto;

/// The heads of an attention node and its logit scale.
#[derive(Debug, Clone, Copy)]
pub struct Heads {
    pub count: usize,
    pub scale: f32,
}

fn norm_axis(axis: isize, rank: usize) -> usize {
    if axis < 0 {
        (rank as isize + axis) as usize
    } else {
        axis as usize
    }
}

impl Graph {
    fn elementwise(&mut self, op: &str, a: &Value, b: &Value) -> Result<Value> {
        let dims = self.broadcast(&a.dims, &b.dims)?;
        self.node(op, &[a, b], vec![], a.dtype, dims)
    }

    pub fn add(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.elementwise("Add", a, b)
    }
    pub fn sub(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.elementwise("Sub", a, b)
    }
    pub fn mul(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.elementwise("Mul", a, b)
    }
    pub fn div(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.elementwise("Div", a, b)
    }

    fn unary(&mut self, op: &str, x: &Value) -> Result<Value> {
        self.node(op, &[x], vec![], x.dtype, x.dims.clone())
    }
    pub fn cos(&mut self, x: &Value) -> Result<Value> {
        self.unary("Cos", x)
    }
    pub fn sin(&mut self, x: &Value) -> Result<Value> {
        self.unary("Sin", x)
    }
    pub fn abs(&mut self, x: &Value) -> Result<Value> {
        self.unary("Abs", x)
    }
    pub fn sign(&mut self, x: &Value) -> Result<Value> {
        self.unary("Sign", x)
    }
    pub fn log(&mut self, x: &Value) -> Result<Value> {
        self.unary("Log", x)
    }
    pub fn neg(&mut self, x: &Value) -> Result<Value> {
        self.unary("Neg", x)
    }
    pub fn round(&mut self, x: &Value) -> Result<Value> {
        self.unary("Round", x)
    }

    pub fn leaky_relu(&mut self, x: &Value, alpha: f32) -> Result<Value> {
        self.node(
            "LeakyRelu",
            &[x],
            vec![AttributeProto::float("alpha", alpha)],
            x.dtype,
            x.dims.clone(),
        )
    }

    /// Exact (erf) GELU, opset 20.
    pub fn gelu(&mut self, x: &Value) -> Result<Value> {
        self.node(
            "Gelu",
            &[x],
            vec![AttributeProto::string("approximate", "none")],
            x.dtype,
            x.dims.clone(),
        )
    }

    pub fn cast(&mut self, x: &Value, to: DType) -> Result<Value> {
        self.node(
            "Cast",
            &[x],
            vec![AttributeProto::int("to", to.onnx() as i32 as i64)],
            to,
            x.dims.clone(),
        )
    }

    /// `max(x, lo)` as a `Clip` without upper bound: ONNX Runtime's `Max` against a
    /// broadcast scalar takes its generic variadic path, about 15 times slower.
    pub fn clip_min(&mut self, x: &Value, lo: f32) -> Result<Value> {
        let l = self.scalar_f32(lo)?;
        self.node("Clip", &[x, &l], vec![], x.dtype, x.dims.clone())
    }

    pub fn clip(&mut self, x: &Value, lo: f32, hi: f32) -> Result<Value> {
        let (l, h) = (self.scalar_f32(lo)?, self.scalar_f32(hi)?);
        self.node("Clip", &[x, &l, &h], vec![], x.dtype, x.dims.clone())
    }

    /// `x @ w` where `w` is a constant `[K, N]`.
    pub fn matmul(&mut self, x: &Value, w: &Value) -> Result<Value> {
        ensure!(x.rank() >= 2 && w.rank() >= 2, "MatMul needs rank >= 2 ({x:?}, {w:?})");
        let (k1, k2) = (x.dim(-1), w.dim(-2));
        if let (Some(a), Some(b)) = (k1.fixed(), k2.fixed()) {
            ensure!(a == b, "MatMul inner dims differ: {x:?} @ {w:?}");
        }
        let batch = self.broadcast(&x.dims[..x.rank() - 2], &w.dims[..w.rank() - 2])?;
        let mut dims = batch;
        dims.push(x.dim(-2));
        dims.push(w.dim(-1));
        self.node("MatMul", &[x, w], vec![], x.dtype, dims)
    }

    pub fn layer_norm(&mut self, x: &Value, gamma: &Value, beta: &Value, eps: f32) -> Result<Value> {
        self.node(
            "LayerNormalization",
            &[x, gamma, beta],
            vec![AttributeProto::int("axis", -1), AttributeProto::float("epsilon", eps)],
            x.dtype,
            x.dims.clone(),
        )
    }

    pub fn reshape(&mut self, x: &Value, dims: &[Dim]) -> Result<Value> {
        let shape = self.shape_tensor(dims)?;
        self.node("Reshape", &[x, &shape], vec![], x.dtype, dims.to_vec())
    }

    pub fn transpose(&mut self, x: &Value, perm: &[usize]) -> Result<Value> {
        ensure!(perm.len() == x.rank(), "Transpose perm {perm:?} for {x:?}");
        let dims = perm.iter().map(|&p| x.dims[p].clone()).collect();
        let perm_i: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
        self.node(
            "Transpose",
            &[x],
            vec![AttributeProto::ints("perm", &perm_i)],
            x.dtype,
            dims,
        )
    }

    pub fn concat(&mut self, xs: &[&Value], axis: isize) -> Result<Value> {
        ensure!(!xs.is_empty(), "Concat of nothing");
        let a = norm_axis(axis, xs[0].rank());
        let mut total = Dim::Fixed(0);
        for x in xs {
            total = self.dim_add(&total, &x.dims[a])?;
        }
        let mut dims = xs[0].dims.clone();
        dims[a] = total;
        self.node(
            "Concat",
            xs,
            vec![AttributeProto::int("axis", a as i64)],
            xs[0].dtype,
            dims,
        )
    }

    /// `x[.., start:end, ..]` on one axis with known bounds.
    pub fn slice_const(&mut self, x: &Value, axis: isize, start: i64, end: i64) -> Result<Value> {
        let a = norm_axis(axis, x.rank());
        let starts = self.const_i64(&[1], &[start])?;
        let ends = self.const_i64(&[1], &[end])?;
        let axes = self.const_i64(&[1], &[a as i64])?;
        let mut dims = x.dims.clone();
        dims[a] = match x.dims[a].fixed() {
            Some(n) => Dim::Fixed(end.min(n) - start.min(n)),
            None if end < i64::MAX / 2 => Dim::Fixed(end - start),
            None => {
                let s = Dim::Fixed(start);
                self.dim_sub(&x.dims[a], &s)?
            }
        };
        self.node("Slice", &[x, &starts, &ends, &axes], vec![], x.dtype, dims)
    }

    /// `x` with `n` more entries of `value` at the end of its last axis (constant Pad).
    pub fn pad_last(&mut self, x: &Value, n: i64, value: f32) -> Result<Value> {
        let pads = self.const_i64(&[2], &[0, n])?;
        let v = self.scalar_f32(value)?;
        let axes = self.const_i64(&[1], &[-1])?;
        let mut dims = x.dims.clone();
        let last = dims.len() - 1;
        dims[last] = self.dim_add(&dims[last], &Dim::Fixed(n))?;
        self.node("Pad", &[x, &pads, &v, &axes], vec![], x.dtype, dims)
    }

    /// `x[.., start:, ..]`.
    pub fn slice_from(&mut self, x: &Value, axis: isize, start: i64) -> Result<Value> {
        self.slice_const(x, axis, start, i64::MAX)
    }

    /// `table[indices]` along axis 0 (embedding lookup).
    pub fn gather(&mut self, table: &Value, indices: &Value) -> Result<Value> {
        let mut dims = indices.dims.clone();
        dims.extend_from_slice(&table.dims[1..]);
        self.node(
            "Gather",
            &[table, indices],
            vec![AttributeProto::int("axis", 0)],
            table.dtype,
            dims,
        )
    }

    pub fn unsqueeze(&mut self, x: &Value, axes: &[i64]) -> Result<Value> {
        let mut dims = x.dims.clone();
        let rank = x.rank() + axes.len();
        let mut sorted: Vec<usize> = axes.iter().map(|&a| norm_axis(a as isize, rank)).collect();
        sorted.sort();
        for a in sorted {
            dims.insert(a, Dim::Fixed(1));
        }
        let ax = self.const_i64(&[axes.len() as i64], axes)?;
        self.node("Unsqueeze", &[x, &ax], vec![], x.dtype, dims)
    }

    /// L2 norm over the last axis, kept (`ReduceL2`, opset 18 form).
    pub fn reduce_l2_last(&mut self, x: &Value) -> Result<Value> {
        let axes = self.const_i64(&[1], &[-1])?;
        let mut dims = x.dims.clone();
        *dims.last_mut().unwrap() = Dim::Fixed(1);
        self.node(
            "ReduceL2",
            &[x, &axes],
            vec![AttributeProto::int("keepdims", 1)],
            x.dtype,
            dims,
        )
    }

    pub fn max(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.elementwise("Max", a, b)
    }

    /// Integer remainder (`Mod`, `fmod = 0`: the sign of the divisor, as Python's `%`).
    pub fn modulo(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.elementwise("Mod", a, b)
    }

    /// `a > b`, elementwise, as bools.
    pub fn greater(&mut self, a: &Value, b: &Value) -> Result<Value> {
        let dims = self.broadcast(&a.dims, &b.dims)?;
        self.node("Greater", &[a, b], vec![], DType::Bool, dims)
    }

    /// `cond ? a : b`, elementwise (`torch.where`).
    pub fn where_(&mut self, cond: &Value, a: &Value, b: &Value) -> Result<Value> {
        ensure!(cond.dtype == DType::Bool, "Where needs a bool condition ({cond:?})");
        let dims = self.broadcast(&cond.dims, &a.dims)?;
        let dims = self.broadcast(&dims, &b.dims)?;
        self.node("Where", &[cond, a, b], vec![], a.dtype, dims)
    }

    /// Multi-head attention over 3-D `[batch, seq, heads * head_dim]` Q, K, V (ONNX
    /// `Attention`, opset 23): `softmax(q k^T * scale + bias) v` per head, `bias`
    /// broadcasting against `[batch, heads, seq, seq]`, a causal mask when `causal`.
    pub fn attention(
        &mut self,
        q: &Value,
        k: &Value,
        v: &Value,
        bias: Option<&Value>,
        heads: Heads,
        causal: bool,
    ) -> Result<Value> {
        let Heads { count: heads, scale } = heads;
        ensure!(q.rank() == 3, "Attention takes 3-D inputs here ({q:?})");
        let mut inputs = vec![Some(q), Some(k), Some(v)];
        if let Some(b) = bias {
            inputs.push(Some(b));
        }
        let mut out = self.node_opt(
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

    /// The same without bias or mask, as `com.microsoft.MultiHeadAttention`, which
    /// stays on ONNX Runtime's flash-attention path.
    pub fn multi_head_attention(&mut self, q: &Value, k: &Value, v: &Value, heads: Heads) -> Result<Value> {
        let Heads { count: heads, scale } = heads;
        ensure!(q.rank() == 3, "MultiHeadAttention takes 3-D inputs here ({q:?})");
        self.ms_node(
            "MultiHeadAttention",
            &[Some(q), Some(k), Some(v)],
            vec![
                AttributeProto::int("num_heads", heads as i64),
                AttributeProto::float("scale", scale),
            ],
            DType::F32,
            q.dims.clone(),
        )
    }

    /// `x` broadcast to `dims` (`Expand`).
    pub fn expand(&mut self, x: &Value, dims: &[Dim]) -> Result<Value> {
        let out = self.broadcast(&x.dims, dims)?;
        let shape = self.shape_tensor(dims)?;
        self.node("Expand", &[x, &shape], vec![], x.dtype, out)
    }

    /// Rotary position embedding (ONNX `RotaryEmbedding`, opset 23) of 3-D
    /// `[batch, seq, heads * head_dim]` `x`: channel pairs `(2j, 2j + 1)` of every head are
    /// rotated by the angle whose `cos` and `sin` are row `position_ids[b, s]`, column `j` of
    /// the `[positions, head_dim / 2]` tables (`interleaved`), in one pass.
    pub fn rotary_embedding(
        &mut self,
        x: &Value,
        cos: &Value,
        sin: &Value,
        position_ids: &Value,
        heads: usize,
    ) -> Result<Value> {
        ensure!(x.rank() == 3, "RotaryEmbedding takes a 3-D input here ({x:?})");
        ensure!(
            cos.rank() == 2 && sin.rank() == 2 && position_ids.rank() == 2,
            "RotaryEmbedding tables are [positions, head_dim / 2], position ids [batch, seq] ({cos:?}, {position_ids:?})"
        );
        self.node(
            "RotaryEmbedding",
            &[x, cos, sin, position_ids],
            vec![
                AttributeProto::int("interleaved", 1),
                AttributeProto::int("num_heads", heads as i64),
            ],
            x.dtype,
            x.dims.clone(),
        )
    }

    /// `ArgMin` over `axis`, first index on ties, axis dropped.
    pub fn argmin(&mut self, x: &Value, axis: isize) -> Result<Value> {
        let a = norm_axis(axis, x.rank());
        let mut dims = x.dims.clone();
        dims.remove(a);
        self.node(
            "ArgMin",
            &[x],
            vec![
                AttributeProto::int("axis", a as i64),
                AttributeProto::int("keepdims", 0),
                AttributeProto::int("select_last_index", 0),
            ],
            DType::I64,
            dims,
        )
    }

    /// `Range(0, n)` as int64.
    pub fn range(&mut self, n: &Dim) -> Result<Value> {
        let zero = self.const_i64(&[], &[0])?;
        let one = self.const_i64(&[], &[1])?;
        let limit = match n {
            Dim::Fixed(v) => self.const_i64(&[], &[*v])?,
            Dim::Sym(_) => {
                let t = self.dim_tensor(n)?;
                let axes = self.const_i64(&[1], &[0])?;
                self.node("Squeeze", &[&t, &axes], vec![], DType::I64, vec![])?
            }
        };
        self.node("Range", &[&zero, &limit, &one], vec![], DType::I64, vec![n.clone()])
    }

    /// A depthwise 3x3 convolution (`group` = channels) with zero padding 1 on
    /// `[n, c, h, w]`; ONNX Runtime's CPU provider runs it on its blocked (NCHWc) kernels,
    /// which it has for 2-D convolutions only.
    pub fn depthwise_conv2d(&mut self, x: &Value, weight: &Value, bias: Option<&Value>) -> Result<Value> {
        ensure!(x.rank() == 4, "depthwise Conv input must be 4-D ({x:?})");
        let c = x.dims[1]
            .fixed()
            .ok_or_else(|| anyhow::anyhow!("Conv channels must be known"))?;
        let mut inputs = vec![x, weight];
        inputs.extend(bias);
        self.node(
            "Conv",
            &inputs,
            vec![
                AttributeProto::int("group", c),
                AttributeProto::ints("kernel_shape", &[3, 3]),
                AttributeProto::ints("pads", &[1, 1, 1, 1]),
                AttributeProto::ints("strides", &[1, 1]),
            ],
            x.dtype,
            x.dims.clone(),
        )
    }

    /// `x` shifted by `shift` entries along `axis` at the same length: `shift` zeros in
    /// front and as many entries cut at the end, or the reverse for a negative shift (one
    /// constant Pad with a negative side).
    pub fn shift_axis(&mut self, x: &Value, axis: isize, shift: i64) -> Result<Value> {
        if shift == 0 {
            return Ok(x.clone());
        }
        let (a, rank) = (norm_axis(axis, x.rank()), x.rank());
        // all axes, begins then ends; no constant input: zeros of x's own type
        let mut pads = vec![0; 2 * rank];
        pads[a] = shift;
        pads[rank + a] = -shift;
        let pads = self.const_i64(&[2 * rank as i64], &pads)?;
        self.node("Pad", &[x, &pads], vec![], x.dtype, x.dims.clone())
    }
}
