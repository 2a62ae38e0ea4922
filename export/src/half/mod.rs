//! `--precision f16`: a pass over the finished ONNX graphs that runs the transformer stacks
//! in half precision for GPUs, with float32 kept where half loses accuracy.
//!
//! Each float node gets one of two arithmetics:
//! - **float32 islands** (by construction): everything outside the encoder and decoder
//!   stacks (`preprocess/`, `codebook/` distances and argmin, `pre_vq_conv/`, `post_vq_conv/`,
//!   `postprocess/`, `output/`), the decoder's pixel heads (`decoder/to_pixels*`, the most
//!   sensitive layers of the int8 study, about 1.5% of the decoder's MatMul work), the L2
//!   normalisation of queries and keys (`ReduceL2`, and the `Max` / `Div` on its result, so
//!   no sum of squares can overflow half's 65504), and the RoPE angles (`Range` / `Cast` /
//!   `Cos` / `Sin`: positions times frequencies need float32's mantissa; the cosines and sines
//!   themselves go to half where they meet half activations), and any `Softmax`, `Log` or
//!   `Exp` (explicit softmax, the continuous position bias's log-spaced offsets).
//! - **half**: the weight MatMuls, the PEG convolutions, GELU, LayerNormalization (with
//!   `stash_type = 1`: mean and variance in float32), attention (`Attention` with
//!   `softmax_precision = 1`: the softmax in float32; `com.microsoft` `MultiHeadAttention`,
//!   whose CUDA kernels accumulate in float32), and every element-wise or layout node that
//!   reads a half activation.
//!
//! Comparisons of a half and a float32 tensor compare in float32. A `Cast` is inserted
//! wherever a tensor crosses between the two (once per tensor and direction); weights read
//! by half nodes are stored as half (`NAME.f16`). Graph inputs and outputs keep their types
//! (docs/GRAPHS.md), so the elements need no change.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use anyhow::{Context, Result, bail};

use crate::onnx::{AttributeProto, DataType, GraphProto, ModelProto, NodeProto, TensorProto};
use crate::quantize::{self, META_PRECISION};

/// Metadata key: what the f16 pass kept float32, as JSON (f16 graphs only).
pub const META_F16_POLICY: &str = "omnitok.f16_policy";

/// `--precision`: the int8 pass's precisions plus `f16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Float32 everywhere: the graphs as traced.
    #[default]
    F32,
    /// Weight MatMuls in int8 ([`crate::quantize`]).
    Int8,
    /// Half precision for GPUs (this module).
    F16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
            Precision::F16 => "f16",
        }
    }
}

impl FromStr for Precision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f16" | "fp16" | "float16" => Ok(Precision::F16),
            "bf16" | "bfloat16" => bail!(
                "precision '{s}' is not offered: ONNX Runtime's CUDA provider has bfloat16 kernels, but its \
                 CPU provider has no bfloat16 MatMul, so parity with f32 cannot be tested off the GPU, and f16 \
                 runs at the same tensor-core rate with three more mantissa bits; use f16"
            ),
            _ => match quantize::Precision::from_str(s) {
                Ok(quantize::Precision::F32) => Ok(Precision::F32),
                Ok(quantize::Precision::Int8) => Ok(Precision::Int8),
                Err(_) => bail!("unknown precision '{s}': expected f32, int8 or f16"),
            },
        }
    }
}

/// Name prefixes of the nodes that always run in float32 (see the module docs).
pub const FLOAT_PREFIXES: &[&str] = &[
    "preprocess/",
    "postprocess/",
    "output/",
    "codebook/",
    "pre_vq_conv/",
    "post_vq_conv/",
    "decoder/to_pixels",
];

/// Operators that always run in float32 inside the stacks.
const FLOAT_OPS: &[&str] = &["ReduceL2", "Cos", "Sin", "ArgMin", "Range", "Softmax", "Log", "Exp"];

/// Operators that run in half inside the stacks whatever their inputs are.
const HALF_OPS: &[&str] = &[
    "MatMul",
    "Conv",
    "Gelu",
    "LayerNormalization",
    "Attention",
    "MultiHeadAttention",
];

/// What [`to_half`] did to one graph.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HalfReport {
    /// Float nodes now computing in half.
    pub half_nodes: usize,
    /// Float nodes kept in float32.
    pub float_nodes: usize,
    /// `Cast` nodes inserted between the two.
    pub casts: usize,
    /// Weight initializers stored in half.
    pub half_weights: usize,
}

/// The f16 policy recorded in `omnitok.f16_policy`.
pub fn policy_json(report: &HalfReport) -> String {
    serde_json::json!({
        "half": "weight MatMuls, PEG convolutions, GELU, attention, LayerNormalization, element-wise nodes on half activations",
        "float32": "LayerNormalization statistics (stash_type 1), softmax (softmax_precision 1), L2 normalisation, RoPE angles, codebook distances and argmin, pre/post_vq_conv, pixel heads, pre- and post-processing",
        "float_prefixes": FLOAT_PREFIXES,
        "half_nodes": report.half_nodes,
        "float_nodes": report.float_nodes,
        "casts": report.casts,
    })
    .to_string()
}

fn is_float(t: DataType) -> bool {
    matches!(t, DataType::Float | DataType::Float16)
}

fn float_values(t: &TensorProto) -> Result<Vec<f32>> {
    if t.is_external() {
        bail!(
            "initializer {} is stored externally; the f16 pass needs inline weights",
            t.name()
        );
    }
    match &t.raw_data {
        Some(raw) => Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()),
        None => Ok(t.float_data.clone()),
    }
}

/// A half copy of a float32 initializer, named `NAME.f16`. Values beyond half's range would
/// become infinities: refused.
fn half_initializer(t: &TensorProto) -> Result<TensorProto> {
    let v = float_values(t)?;
    let mut raw = Vec::with_capacity(v.len() * 2);
    for x in v {
        let h = half::f16::from_f32(x);
        if h.is_infinite() && x.is_finite() {
            bail!("initializer {}: value {x} does not fit in half precision", t.name());
        }
        raw.extend_from_slice(&h.to_le_bytes());
    }
    Ok(TensorProto::from_raw(
        format!("{}.f16", t.name()),
        &t.dims,
        DataType::Float16,
        raw,
    ))
}

fn cast(input: &str, output: &str, to: DataType) -> NodeProto {
    let mut n = NodeProto::new("Cast", format!("{output}/Cast"), [input], [output]);
    n.attribute.push(AttributeProto::int("to", to as i64));
    n
}

fn set_int_attr(n: &mut NodeProto, name: &str, v: i64) {
    n.attribute.retain(|a| a.name() != name);
    n.attribute.push(AttributeProto::int(name, v));
}

/// The element type of a node's first output from its inputs' (the rules of the operators
/// our graphs use: `Cast` says, `Shape` and `ArgMin` give int64, comparisons bool, `Where`
/// follows input 1, the rest input 0).
fn output_type(n: &NodeProto, types: &HashMap<String, DataType>) -> Option<DataType> {
    match n.op_type() {
        "Cast" => n
            .attribute
            .iter()
            .find(|a| a.name() == "to")
            .and_then(|a| a.i)
            .and_then(|i| DataType::try_from(i as i32).ok()),
        "Shape" | "Size" | "ArgMin" | "ArgMax" => Some(DataType::Int64),
        "Greater" | "Less" | "Equal" | "GreaterOrEqual" | "LessOrEqual" | "Not" | "And" | "Or" | "Xor" | "IsNaN"
        | "IsInf" => Some(DataType::Bool),
        "Where" => n.input.get(1).and_then(|i| types.get(i).copied()),
        _ => n.input.first().and_then(|i| types.get(i).copied()),
    }
}

/// Rewrites one graph into half precision (module docs) and records `omnitok.precision` =
/// `f16` and `omnitok.f16_policy`.
pub fn to_half(model: &mut ModelProto) -> Result<HalfReport> {
    let g = model.graph.as_mut().context("model without a graph")?;
    let report = rewrite(g)?;
    model.set_metadata(META_PRECISION, Precision::F16.as_str());
    model.set_metadata(META_F16_POLICY, policy_json(&report));
    Ok(report)
}

/// [`to_half`] on both graphs of an export.
pub fn to_half_pair(encoder: &mut ModelProto, decoder: &mut ModelProto) -> Result<[HalfReport; 2]> {
    let e = to_half(encoder).context("converting the encoder to f16")?;
    let d = to_half(decoder).context("converting the decoder to f16")?;
    Ok([e, d])
}

fn rewrite(g: &mut GraphProto) -> Result<HalfReport> {
    let mut report = HalfReport::default();
    let mut types: HashMap<String, DataType> = HashMap::new();
    for vi in &g.input {
        if let Some(t) = vi.tensor_type() {
            types.insert(
                vi.name().to_string(),
                DataType::try_from(t.elem_type()).unwrap_or_default(),
            );
        }
    }
    let inits: HashMap<String, usize> = g
        .initializer
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name().to_string(), i))
        .collect();
    for t in &g.initializer {
        types.insert(t.name().to_string(), t.elem_type());
    }
    let mut half_inits: HashMap<String, String> = HashMap::new();
    let mut new_inits: Vec<TensorProto> = Vec::new();
    // Casts already made: (tensor, to half?) -> cast output.
    let mut casts: HashMap<(String, bool), String> = HashMap::new();
    let mut nodes: Vec<NodeProto> = Vec::with_capacity(g.node.len() * 2);

    for mut n in std::mem::take(&mut g.node) {
        let Some(out_type) = output_type(&n, &types) else {
            bail!("node {}: cannot tell the type of its output", n.name());
        };
        let float_node = is_float(out_type) && n.op_type() != "Cast";
        if !float_node {
            // A comparison of a half and a float32 tensor compares in float32; otherwise
            // a node with a non-float result is left as it is.
            let floats: HashSet<DataType> = n
                .input
                .iter()
                .filter_map(|i| types.get(i.as_str()).copied())
                .filter(|t| is_float(*t))
                .collect();
            if floats.len() < 2 {
                for o in &n.output {
                    types.insert(o.clone(), out_type);
                }
                nodes.push(n);
                continue;
            }
        }
        let is_act = |name: &str| !name.is_empty() && !inits.contains_key(name);
        let act_type = |name: &str| types.get(name).copied().filter(|t| is_float(*t));
        let half = if !float_node
            || FLOAT_PREFIXES.iter().any(|p| n.name().starts_with(p))
            || FLOAT_OPS.contains(&n.op_type())
        {
            false
        } else if HALF_OPS.contains(&n.op_type()) {
            true
        } else if n.op_type() == "Div"
            && n.input
                .get(1)
                .is_some_and(|d| is_act(d) && act_type(d) == Some(DataType::Float))
        {
            // Dividing by a float32 activation: the L2 normalisation's norm.
            false
        } else {
            n.input
                .iter()
                .any(|i| is_act(i) && act_type(i) == Some(DataType::Float16))
        };
        let want = if half { DataType::Float16 } else { DataType::Float };
        let node_name = n.name().to_string();
        for input in n.input.iter_mut() {
            if input.is_empty() {
                continue;
            }
            let Some(t) = types.get(input.as_str()).copied() else {
                bail!("node {node_name}: input {input} is not produced before it");
            };
            if !is_float(t) || t == want {
                continue;
            }
            if let Some(&i) = inits.get(input.as_str()) {
                // A float32 weight read by a half node: its half copy.
                if !half_inits.contains_key(input.as_str()) {
                    let h = half_initializer(&g.initializer[i])?;
                    half_inits.insert(input.clone(), h.name().to_string());
                    types.insert(h.name().to_string(), DataType::Float16);
                    new_inits.push(h);
                    report.half_weights += 1;
                }
                *input = half_inits[input.as_str()].clone();
                continue;
            }
            let key = (input.clone(), half);
            let name = match casts.get(&key) {
                Some(c) => c.clone(),
                None => {
                    let c = format!("{input}/{}", if half { "to_f16" } else { "to_f32" });
                    nodes.push(cast(input, &c, want));
                    types.insert(c.clone(), want);
                    report.casts += 1;
                    casts.insert(key, c.clone());
                    c
                }
            };
            *input = name;
        }
        if float_node && half {
            match n.op_type() {
                "LayerNormalization" => set_int_attr(&mut n, "stash_type", 1),
                "Attention" => set_int_attr(&mut n, "softmax_precision", DataType::Float as i64),
                _ => {}
            }
            report.half_nodes += 1;
        } else if float_node {
            report.float_nodes += 1;
        }
        for o in &n.output {
            types.insert(o.clone(), if float_node { want } else { out_type });
        }
        nodes.push(n);
    }

    // Graph outputs keep their declared types.
    for out in &g.output {
        let declared = out
            .tensor_type()
            .and_then(|t| DataType::try_from(t.elem_type()).ok())
            .unwrap_or_default();
        let produced = types.get(out.name()).copied();
        if declared == DataType::Float && produced == Some(DataType::Float16) {
            let inner = format!("{}/f16", out.name());
            for n in nodes.iter_mut() {
                for o in n.output.iter_mut() {
                    if o == out.name() {
                        *o = inner.clone();
                    }
                }
                for i in n.input.iter_mut() {
                    if i == out.name() {
                        *i = inner.clone();
                    }
                }
            }
            nodes.push(cast(&inner, out.name(), DataType::Float));
            report.casts += 1;
        }
    }
    g.node = nodes;

    // Float32 weights no node reads any more are dropped.
    let used: HashSet<&str> = g.node.iter().flat_map(|n| n.input.iter().map(String::as_str)).collect();
    let mut kept: Vec<TensorProto> = std::mem::take(&mut g.initializer)
        .into_iter()
        .filter(|t| used.contains(t.name()))
        .collect();
    kept.extend(new_inits);
    g.initializer = kept;
    Ok(report)
}

/// Converts the float32 `encoder.onnx` and `decoder.onnx` of `src` into f16 graphs in `dst`
/// (tests, benchmarks: the f16 counterpart of an export already on disk).
pub fn convert_dir(src: &std::path::Path, dst: &std::path::Path) -> Result<[HalfReport; 2]> {
    std::fs::create_dir_all(dst).with_context(|| format!("cannot create {}", dst.display()))?;
    let mut reports = Vec::new();
    for name in ["encoder.onnx", "decoder.onnx"] {
        let mut m = crate::onnx::load(&src.join(name))?;
        reports.push(to_half(&mut m).with_context(|| format!("converting {}", src.join(name).display()))?);
        crate::onnx::save(m, &dst.join(name))?;
    }
    Ok([reports.remove(0), reports.remove(0)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_parses_f16_and_the_int8_pass_precisions() {
        assert_eq!("f16".parse::<Precision>().unwrap(), Precision::F16);
        assert_eq!("fp16".parse::<Precision>().unwrap(), Precision::F16);
        assert_eq!("f32".parse::<Precision>().unwrap(), Precision::F32);
        assert_eq!("int8".parse::<Precision>().unwrap(), Precision::Int8);
        let e = "bf16".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("use f16"), "{e}");
        let e = "f8".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("f32, int8 or f16"), "{e}");
    }

    fn tiny_f16(seed: u64) -> (ModelProto, ModelProto, [HalfReport; 2]) {
        let p = crate::config::preset("tiny").unwrap();
        let weights = crate::Weights::new(crate::Source::Random(seed));
        let opts = crate::ExportOptions {
            attention: p.attention,
            intermediates: true,
        };
        let prov = crate::Provenance::Random {
            preset: "tiny".into(),
            seed,
        };
        let mut e = crate::build(&p.config(), &weights, opts, &prov).unwrap();
        let r = to_half_pair(&mut e.encoder, &mut e.decoder).unwrap();
        (e.encoder, e.decoder, r)
    }

    #[test]
    fn islands_stay_float_and_boundaries_keep_their_types() {
        let (enc, dec, [re, rd]) = tiny_f16(9301);
        for (m, r) in [(&enc, &re), (&dec, &rd)] {
            assert!(
                r.half_nodes > 20 && r.float_nodes > 5 && r.casts > 0 && r.half_weights > 10,
                "{r:?}"
            );
            assert_eq!(m.metadata(META_PRECISION), Some("f16"));
            let g = m.graph.as_ref().unwrap();
            let inits: HashMap<&str, &TensorProto> = g.initializer.iter().map(|t| (t.name(), t)).collect();
            for n in &g.node {
                let weight = n.input.get(1).and_then(|i| inits.get(i.as_str()));
                // Codebook and pixel heads read float32 weights; the stacks' MatMuls half ones.
                if n.op_type() == "MatMul" {
                    let w = weight.expect("MatMul weights are initializers here");
                    let float = FLOAT_PREFIXES.iter().any(|p| n.name().starts_with(p));
                    let want = if float { DataType::Float } else { DataType::Float16 };
                    assert_eq!(w.elem_type(), want, "{}", n.name());
                }
                if n.op_type() == "LayerNormalization" {
                    assert!(n.attribute.iter().any(|a| a.name() == "stash_type" && a.i == Some(1)));
                }
                if n.op_type() == "Attention" {
                    assert!(
                        n.attribute
                            .iter()
                            .any(|a| a.name() == "softmax_precision" && a.i == Some(1))
                    );
                }
            }
            // Every graph output is produced by a node that computes its declared type.
            for o in &g.output {
                assert!(
                    g.node.iter().any(|n| n.output.iter().any(|x| x == o.name())),
                    "{}",
                    o.name()
                );
            }
        }
        // The intermediates (float32 outputs of half tensors) pass through a final Cast.
        let g = enc.graph.as_ref().unwrap();
        assert!(g.output.iter().any(|o| o.name() == "pre_quant"));
    }

    /// Every node's float inputs share one type after the pass (comparisons and `Where`
    /// included), and the graph output is float32 again.
    #[test]
    fn comparisons_and_where_get_consistent_types() {
        use crate::onnx::{Dim, ValueInfoProto};
        let mut g = GraphProto::new("g");
        g.input
            .push(ValueInfoProto::tensor("x", DataType::Float, &[Dim::from(2)]));
        g.output
            .push(ValueInfoProto::tensor("y", DataType::Float, &[Dim::from(2)]));
        g.initializer
            .push(TensorProto::from_f32("encoder.w", &[2, 2], &[1.0, 2.0, 3.0, 4.0]));
        g.initializer.push(TensorProto::from_f32("const/zero", &[1], &[0.0]));
        g.node
            .push(NodeProto::new("MatMul", "encoder/MatMul", ["x", "encoder.w"], ["h"]));
        g.node
            .push(NodeProto::new("Greater", "encoder/Greater", ["h", "x"], ["b"]));
        g.node.push(NodeProto::new(
            "Where",
            "encoder/Where",
            ["b", "h", "const/zero"],
            ["w"],
        ));
        g.node.push(NodeProto::new("Identity", "output/y", ["w"], ["y"]));
        let mut m = ModelProto::new(11, &[("", 23)], g);
        to_half(&mut m).unwrap();
        let g = m.graph.as_ref().unwrap();
        let mut types: HashMap<String, DataType> = HashMap::from([("x".to_string(), DataType::Float)]);
        for t in &g.initializer {
            types.insert(t.name().to_string(), t.elem_type());
        }
        for n in &g.node {
            let ins: Vec<DataType> = n.input.iter().map(|i| types[i.as_str()]).collect();
            let floats: HashSet<DataType> = ins.iter().copied().filter(|t| is_float(*t)).collect();
            assert!(floats.len() <= 1 || n.op_type() == "Cast", "{}: {ins:?}", n.name());
            types.insert(n.output[0].clone(), output_type(n, &types).unwrap());
        }
        assert_eq!(types["h"], DataType::Float16, "the weight MatMul runs in half");
        assert_eq!(types["b"], DataType::Bool);
        assert_eq!(types["y"], DataType::Float);
    }
}
