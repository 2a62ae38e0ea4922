//! The tracer: a graph builder whose values carry their element type and shape.
//!
//! Shapes are tracked when a node is wired. Batch, frame count, height and width
//! stay symbolic: a symbolic dimension is a named expression backed by a one-element
//! int64 tensor computed inside the graph (from `Shape` of an input), so reshapes can
//! be written in terms of it and the same graph serves every size. Dimension
//! arithmetic on known sizes folds at trace time.
//!
//! Nodes are added only through the typed operators of `ops.rs` (one per ONNX operator,
//! each computing its output shape). Node names follow the scope the model sets, its
//! module path (`encoder/enc_spatial_transformer/layers.0/1/to_q/MatMul`); initializers
//! are named by their state-dict key; duplicate names are refused.

mod ops;

pub use ops::Heads;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::rc::Rc;

use anyhow::{Result, bail};

use crate::export::{IR_VERSION, OPSET};
use crate::onnx::{
    AttributeProto, DataType, Dim as OnnxDim, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};

/// One dimension of a graph input: a fixed size, or a name for a size the graph
/// takes at run time.
#[derive(Debug, Clone, Copy)]
pub enum InputDim<'a> {
    Named(&'a str),
    Fixed(i64),
}

/// Element types our graphs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I64,
    U8,
    Bool,
}

impl DType {
    fn onnx(self) -> DataType {
        match self {
            DType::F32 => DataType::Float,
            DType::I64 => DataType::Int64,
            DType::U8 => DataType::Uint8,
            DType::Bool => DataType::Bool,
        }
    }
}

/// One dimension of a traced value.
#[derive(Clone)]
pub enum Dim {
    Fixed(i64),
    Sym(Rc<SymDim>),
}

/// A symbolic dimension: a display name and the graph tensor (int64, shape [1]) holding it.
pub struct SymDim {
    pub name: String,
    pub tensor: String,
}

impl Dim {
    pub fn fixed(&self) -> Option<i64> {
        match self {
            Dim::Fixed(v) => Some(*v),
            Dim::Sym(_) => None,
        }
    }

    fn same(&self, other: &Dim) -> bool {
        match (self, other) {
            (Dim::Fixed(a), Dim::Fixed(b)) => a == b,
            (Dim::Sym(a), Dim::Sym(b)) => a.name == b.name,
            _ => false,
        }
    }
}

impl From<i64> for Dim {
    fn from(v: i64) -> Self {
        Dim::Fixed(v)
    }
}

impl fmt::Debug for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(v) => write!(f, "{v}"),
            Dim::Sym(s) => write!(f, "{}", s.name),
        }
    }
}

/// A traced tensor: its graph name, element type and shape.
#[derive(Clone)]
pub struct Value {
    pub name: String,
    pub dtype: DType,
    pub dims: Vec<Dim>,
}

impl Value {
    pub fn rank(&self) -> usize {
        self.dims.len()
    }

    /// Dimension `axis`, negative axes counting from the end.
    pub fn dim(&self, axis: isize) -> Dim {
        let a = if axis < 0 {
            self.dims.len() as isize + axis
        } else {
            axis
        };
        self.dims[a as usize].clone()
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {:?}{:?}", self.name, self.dtype, self.dims)
    }
}

/// Node metadata key (value `1`): each row of the node's output is normalised downstream
/// (the L2 normalisation of Q and K per head, after RoPE), so the row's scale does not matter.
pub const ROW_SCALE_CANCELS: &str = "omnitok.row_scale_cancels";

/// Builds one ONNX graph.
pub struct Graph {
    pub(crate) nodes: Vec<NodeProto>,
    pub(crate) initializers: Vec<TensorProto>,
    pub(crate) inputs: Vec<ValueInfoProto>,
    pub(crate) outputs: Vec<ValueInfoProto>,
    names: HashSet<String>,
    scope: Vec<String>,
    op_counter: HashMap<String, usize>,
    const_cache: HashMap<String, Value>,
    dim_cache: HashMap<String, Rc<SymDim>>,
    pub(crate) uses_ms_domain: bool,
}

impl Default for Graph {
    fn default() -> Self {
        Self::new()
    }
}

impl Graph {
    pub fn new() -> Self {
        Graph {
            nodes: Vec::new(),
            initializers: Vec::new(),
            inputs: Vec::new(),
            outputs: Vec::new(),
            names: HashSet::new(),
            scope: Vec::new(),
            op_counter: HashMap::new(),
            const_cache: HashMap::new(),
            dim_cache: HashMap::new(),
            uses_ms_domain: false,
        }
    }

    /// The traced graph as an ONNX model named `name` (opset [`OPSET`], and
    /// `com.microsoft` 1 where used), without metadata.
    pub fn into_model(self, name: &str) -> ModelProto {
        let mut opsets = vec![("", OPSET)];
        if self.uses_ms_domain {
            opsets.push(("com.microsoft", 1));
        }
        let mut gp = GraphProto::new(name);
        gp.node = self.nodes;
        gp.initializer = self.initializers;
        gp.input = self.inputs;
        gp.output = self.outputs;
        ModelProto::new(IR_VERSION, &opsets, gp).with_producer("omnitok-export", env!("CARGO_PKG_VERSION"))
    }

    /// Makes `parts` the node-name scope (the module path: `encoder`,
    /// `enc_spatial_transformer`, `layers.0`, `1`); returns the scope it replaces.
    pub fn replace_scope(&mut self, parts: Vec<String>) -> Vec<String> {
        std::mem::replace(&mut self.scope, parts)
    }

    /// Runs `f` with `name` pushed on the scope (the tracer's own helper nodes).
    fn scope<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        self.scope.push(name.to_string());
        let out = f(self);
        self.scope.pop();
        out
    }

    fn scoped_name(&mut self, op: &str) -> String {
        let path = self.scope.join("/");
        let key = format!("{path}/{op}");
        let n = self.op_counter.entry(key.clone()).or_insert(0);
        *n += 1;
        if *n == 1 { key } else { format!("{key}_{}", *n - 1) }
    }

    fn claim(&mut self, name: &str) -> Result<()> {
        if !self.names.insert(name.to_string()) {
            bail!("duplicate tensor name '{name}' in graph");
        }
        Ok(())
    }

    /// Declares a graph input; symbolic dims are given by name and become `Dim::Sym`
    /// values computed from `Shape(input)`.
    pub fn input(&mut self, name: &str, dtype: DType, dims: &[InputDim]) -> Result<Value> {
        self.claim(name)?;
        let onnx_dims: Vec<OnnxDim> = dims
            .iter()
            .map(|d| match *d {
                InputDim::Named(n) => OnnxDim::named(n),
                InputDim::Fixed(v) => OnnxDim::Fixed(v),
            })
            .collect();
        self.inputs.push(ValueInfoProto::tensor(name, dtype.onnx(), &onnx_dims));
        let value = Value {
            name: name.to_string(),
            dtype,
            dims: Vec::new(),
        };
        let mut traced = Vec::new();
        let mut shape: Option<Value> = None;
        for (axis, d) in dims.iter().enumerate() {
            match *d {
                InputDim::Fixed(v) => traced.push(Dim::Fixed(v)),
                InputDim::Named(sym) => {
                    let shape = match &shape {
                        Some(s) => s.clone(),
                        None => {
                            let s = self.scope(name, |g| {
                                g.node(
                                    "Shape",
                                    &[&value],
                                    vec![],
                                    DType::I64,
                                    vec![Dim::Fixed(dims.len() as i64)],
                                )
                            })?;
                            shape = Some(s.clone());
                            s
                        }
                    };
                    let a = axis as i64;
                    let t = self.scope(name, |g| g.slice_const(&shape, 0, a, a + 1))?;
                    let sd = Rc::new(SymDim {
                        name: sym.to_string(),
                        tensor: t.name,
                    });
                    self.dim_cache.insert(sym.to_string(), sd.clone());
                    traced.push(Dim::Sym(sd));
                }
            }
        }
        Ok(Value { dims: traced, ..value })
    }

    /// Declares `value` as a graph output named `name` (through an Identity when the name differs).
    pub fn output(&mut self, value: &Value, name: &str, dim_names: &[&str]) -> Result<()> {
        let v = if value.name == name {
            value.clone()
        } else {
            self.claim(name)?;
            self.nodes.push(NodeProto::new(
                "Identity",
                format!("output/{name}"),
                [value.name.clone()],
                [name.to_string()],
            ));
            Value {
                name: name.to_string(),
                ..value.clone()
            }
        };
        let dims: Vec<OnnxDim> = v
            .dims
            .iter()
            .enumerate()
            .map(|(i, d)| match d {
                Dim::Fixed(x) => OnnxDim::Fixed(*x),
                Dim::Sym(s) => OnnxDim::Named(
                    dim_names
                        .get(i)
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| s.name.clone()),
                ),
            })
            .collect();
        self.outputs.push(ValueInfoProto::tensor(name, v.dtype.onnx(), &dims));
        Ok(())
    }

    /// Records on the node that computes `v` that every row of `v` (all but its last axis
    /// fixed) is normalised later, so a positive factor per row cancels
    /// ([`ROW_SCALE_CANCELS`]); the int8 pass then leaves out a per-row rescale there.
    pub fn mark_row_scale_cancels(&mut self, v: &Value) -> Result<()> {
        let node = self
            .nodes
            .iter_mut()
            .rev()
            .find(|n| n.output.contains(&v.name))
            .ok_or_else(|| anyhow::anyhow!("no node computes {}", v.name))?;
        node.metadata_props
            .push(crate::onnx::StringStringEntryProto::new(ROW_SCALE_CANCELS, "1"));
        Ok(())
    }

    /// Adds a node in the current scope. Output dims are the caller's shape inference.
    /// Only the typed operators (`ops.rs`) add nodes.
    fn node(
        &mut self,
        op: &str,
        inputs: &[&Value],
        attrs: Vec<AttributeProto>,
        dtype: DType,
        dims: Vec<Dim>,
    ) -> Result<Value> {
        let inputs: Vec<Option<&Value>> = inputs.iter().map(|v| Some(*v)).collect();
        let mut out = self.node_opt("", op, &inputs, attrs, &[(dtype, dims)])?;
        Ok(out.remove(0))
    }

    /// Adds a node in the com.microsoft domain.
    fn ms_node(
        &mut self,
        op: &str,
        inputs: &[Option<&Value>],
        attrs: Vec<AttributeProto>,
        dtype: DType,
        dims: Vec<Dim>,
    ) -> Result<Value> {
        self.uses_ms_domain = true;
        let mut out = self.node_opt("com.microsoft", op, inputs, attrs, &[(dtype, dims)])?;
        Ok(out.remove(0))
    }

    /// The general form: optional inputs are left as empty names.
    fn node_opt(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[Option<&Value>],
        attrs: Vec<AttributeProto>,
        outputs: &[(DType, Vec<Dim>)],
    ) -> Result<Vec<Value>> {
        let name = self.scoped_name(op);
        let mut outs = Vec::new();
        for (i, (dtype, dims)) in outputs.iter().enumerate() {
            let oname = if outputs.len() == 1 {
                format!("{name}:out")
            } else {
                format!("{name}:out{i}")
            };
            self.claim(&oname)?;
            outs.push(Value {
                name: oname,
                dtype: *dtype,
                dims: dims.clone(),
            });
        }
        let mut input_names: Vec<String> = inputs
            .iter()
            .map(|v| v.map(|v| v.name.clone()).unwrap_or_default())
            .collect();
        while input_names.last().is_some_and(|n| n.is_empty()) {
            input_names.pop();
        }
        let mut node = NodeProto::new(op, name, input_names, outs.iter().map(|o| o.name.clone()));
        if !domain.is_empty() {
            node = node.with_domain(domain);
        }
        node.attribute = attrs;
        self.nodes.push(node);
        Ok(outs)
    }

    /// An initializer holding float data; `key` is the state-dict key when it has one.
    pub fn initializer_f32(&mut self, key: &str, dims: &[i64], data: &[f32]) -> Result<Value> {
        let expected: i64 = dims.iter().product();
        if expected as usize != data.len() {
            bail!("initializer '{key}': {} values for shape {dims:?}", data.len());
        }
        self.claim(key)?;
        self.initializers.push(TensorProto::from_f32(key, dims, data));
        Ok(Value {
            name: key.to_string(),
            dtype: DType::F32,
            dims: dims.iter().map(|&d| Dim::Fixed(d)).collect(),
        })
    }

    /// A small int64 constant, deduplicated by content.
    fn const_i64(&mut self, dims: &[i64], data: &[i64]) -> Result<Value> {
        let key = format!("i64{dims:?}{data:?}");
        if let Some(v) = self.const_cache.get(&key) {
            return Ok(v.clone());
        }
        let name = format!("const/i64_{}", self.const_cache.len());
        self.claim(&name)?;
        self.initializers.push(TensorProto::from_i64(&name, dims, data));
        let v = Value {
            name,
            dtype: DType::I64,
            dims: dims.iter().map(|&d| Dim::Fixed(d)).collect(),
        };
        self.const_cache.insert(key, v.clone());
        Ok(v)
    }

    /// A float constant, deduplicated by content (bit patterns).
    pub fn const_f32(&mut self, dims: &[i64], data: &[f32]) -> Result<Value> {
        let bits: Vec<u32> = data.iter().map(|x| x.to_bits()).collect();
        let key = format!("f32{dims:?}{bits:?}");
        if let Some(v) = self.const_cache.get(&key) {
            return Ok(v.clone());
        }
        let name = format!("const/f32_{}", self.const_cache.len());
        self.claim(&name)?;
        self.initializers.push(TensorProto::from_f32(&name, dims, data));
        let v = Value {
            name,
            dtype: DType::F32,
            dims: dims.iter().map(|&d| Dim::Fixed(d)).collect(),
        };
        self.const_cache.insert(key, v.clone());
        Ok(v)
    }

    pub fn scalar_f32(&mut self, x: f32) -> Result<Value> {
        self.const_f32(&[], &[x])
    }

    /// The one-element int64 tensor holding a dimension.
    pub fn dim_tensor(&mut self, d: &Dim) -> Result<Value> {
        match d {
            Dim::Fixed(v) => self.const_i64(&[1], &[*v]),
            Dim::Sym(s) => Ok(Value {
                name: s.tensor.clone(),
                dtype: DType::I64,
                dims: vec![Dim::Fixed(1)],
            }),
        }
    }

    fn dim_binary(&mut self, a: &Dim, b: &Dim, op: &str, sym: &str, fold: fn(i64, i64) -> i64) -> Result<Dim> {
        if let (Dim::Fixed(x), Dim::Fixed(y)) = (a, b) {
            return Ok(Dim::Fixed(fold(*x, *y)));
        }
        let name = format!("({:?}{sym}{:?})", a, b);
        if let Some(d) = self.dim_cache.get(&name) {
            return Ok(Dim::Sym(d.clone()));
        }
        let (ta, tb) = (self.dim_tensor(a)?, self.dim_tensor(b)?);
        let t = self.scope("dims", |g| {
            g.node(op, &[&ta, &tb], vec![], DType::I64, vec![Dim::Fixed(1)])
        })?;
        let sd = Rc::new(SymDim {
            name: name.clone(),
            tensor: t.name,
        });
        self.dim_cache.insert(name, sd.clone());
        Ok(Dim::Sym(sd))
    }

    pub fn dim_mul(&mut self, a: &Dim, b: &Dim) -> Result<Dim> {
        if a.fixed() == Some(1) {
            return Ok(b.clone());
        }
        if b.fixed() == Some(1) {
            return Ok(a.clone());
        }
        self.dim_binary(a, b, "Mul", "*", |x, y| x * y)
    }

    /// Exact division (callers guarantee divisibility, checked by the graph's guards).
    pub fn dim_div(&mut self, a: &Dim, b: &Dim) -> Result<Dim> {
        if b.fixed() == Some(1) {
            return Ok(a.clone());
        }
        self.dim_binary(a, b, "Div", "/", |x, y| x / y)
    }

    fn dim_add(&mut self, a: &Dim, b: &Dim) -> Result<Dim> {
        if b.fixed() == Some(0) {
            return Ok(a.clone());
        }
        self.dim_binary(a, b, "Add", "+", |x, y| x + y)
    }

    pub fn dim_sub(&mut self, a: &Dim, b: &Dim) -> Result<Dim> {
        if b.fixed() == Some(0) {
            return Ok(a.clone());
        }
        self.dim_binary(a, b, "Sub", "-", |x, y| x - y)
    }

    /// The shape tensor for `dims` (a constant when all are known).
    fn shape_tensor(&mut self, dims: &[Dim]) -> Result<Value> {
        if let Some(fixed) = dims.iter().map(Dim::fixed).collect::<Option<Vec<i64>>>() {
            return self.const_i64(&[fixed.len() as i64], &fixed);
        }
        let parts: Vec<Value> = dims.iter().map(|d| self.dim_tensor(d)).collect::<Result<_>>()?;
        let refs: Vec<&Value> = parts.iter().collect();
        self.node(
            "Concat",
            &refs,
            vec![AttributeProto::int("axis", 0)],
            DType::I64,
            vec![Dim::Fixed(dims.len() as i64)],
        )
    }

    /// Broadcast shape of two operands (numpy rules), checked where both sides are known.
    fn broadcast(&self, a: &[Dim], b: &[Dim]) -> Result<Vec<Dim>> {
        let n = a.len().max(b.len());
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let da = if i + a.len() >= n {
                Some(&a[i + a.len() - n])
            } else {
                None
            };
            let db = if i + b.len() >= n {
                Some(&b[i + b.len() - n])
            } else {
                None
            };
            out.push(match (da, db) {
                (Some(x), None) | (None, Some(x)) => x.clone(),
                (Some(x), Some(y)) => {
                    if x.fixed() == Some(1) {
                        y.clone()
                    } else if y.fixed() == Some(1) || x.same(y) {
                        x.clone()
                    } else if let (Some(p), Some(q)) = (x.fixed(), y.fixed()) {
                        bail!("cannot broadcast {p} against {q} ({a:?} vs {b:?})");
                    } else {
                        x.clone()
                    }
                }
                (None, None) => unreachable!(),
            });
        }
        Ok(out)
    }
}
