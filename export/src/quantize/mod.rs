//! `--precision int8`: a pass over the finished ONNX graphs that turns the weight MatMuls
//! into ONNX Runtime's integer kernels (`com.microsoft` `DynamicQuantizeMatMul`, or
//! `DynamicQuantizeLinear` + `MatMulIntegerToFloat` where several MatMuls read the same
//! activation, which is then quantized once), with symmetric int8 weights quantized here.
//!
//! What the pass may touch: a MatMul whose second input is a rank-2 float initializer named
//! by an `encoder.*` or `decoder.*` state-dict key (the patch embeddings, every attention and
//! feed-forward Linear, the pixel heads). Everything else stays float by construction: the
//! codebook distances and argmin (`codebook.*`), `pre_vq_conv` / `post_vq_conv`, the RoPE
//! rotation (`const/*` matrices), attention itself, LayerNorm, the PEG convolutions.
//! Of those candidates, the ones matched by a keep-float pattern ([`Int8Policy::keep_float`])
//! stay float too; the default list was chosen from the per-layer sensitivity table
//! (`examples/int8_quality.rs`, docs/GRAPHS.md). The encoder's activations are quantized per
//! row (per token: `QuantizeLinear` per axis, [`Int8Policy::per_row`]).

mod pattern;

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use anyhow::{Context, Result, bail};

use crate::onnx::{DataType, GraphProto, ModelProto, NodeProto, TensorProto};

pub use pattern::glob_match;

/// Metadata key: `f32` or `int8` (absent in graphs written before it existed, and in f32
/// graphs, which are unchanged: absent means `f32`).
pub const META_PRECISION: &str = "omnitok.precision";
/// Metadata key: the int8 policy as JSON (int8 graphs only).
pub const META_POLICY: &str = "omnitok.int8_policy";
/// Metadata key of int8 graphs: the CPUs whose integer kernels compute them exactly as
/// stored, `any` (weight pairs along K within 128) or `x86-vnni` (full-range weights: on an
/// x86 CPU without AVX-512 VNNI or AVX-VNNI, ONNX Runtime's `vpmaddubsw` kernels would
/// saturate); on such a CPU the elements store an `x86-vnni` graph's weights as uint8 at load
/// (zero point 128, [`WEIGHT_ZP`]), for the uint8 x uint8 kernels, which are exact there.
pub const META_CPU: &str = "omnitok.int8_cpu";

/// The arithmetic of the exported graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Float32 everywhere: the graphs as traced, bit for bit.
    #[default]
    F32,
    /// Weight MatMuls in int8 (see the module docs).
    Int8,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        }
    }
}

impl FromStr for Precision {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "int8" => Ok(Precision::Int8),
            _ => bail!("unknown precision '{s}': expected f32 or int8"),
        }
    }
}

/// How weight scales are shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// One scale per output channel (column of the `[in, out]` weight).
    PerChannel,
    /// One scale per weight matrix.
    PerTensor,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::PerChannel => "per-channel",
            Granularity::PerTensor => "per-tensor",
        }
    }
}

/// The default keep-float patterns: the decoder's pixel heads and the first frame's patch
/// embedding. From the per-layer sensitivity tables on the trained checkpoint (docs/GRAPHS.md):
/// alone in int8, `decoder.to_pixels` puts the decoder 44 dB from float32 (every other decoder
/// MatMul 52 to 73 dB), and keeping both pixel heads float takes the whole int8 decoder from
/// 42 to 50 dB for about 1.5% of its MatMul work. In the encoder, with per-row activations,
/// the first frame's patch embedding flips the most tokens of any MatMul alone (1.2%) for
/// about 0.3% of the encoder's MatMul work; the next, the feed-forward output projections
/// (0.7 to 1.05% each), cost a sixth of the encoder's MatMul work each, so they stay int8.
pub const DEFAULT_KEEP_FLOAT: &[&str] = &["decoder.to_pixels*", "encoder.to_patch_emb_first_frame*"];

/// The pair bound that keeps every CPU's uint8 x int8 products exact ([`Int8Policy::pair_max`]).
pub const PAIR_MAX_EXACT: u16 = 128;

/// The pair bounds `--int8-pair-max` takes.
pub const PAIR_MAX_RANGE: std::ops::RangeInclusive<u16> = 2..=254;

/// The default per-row patterns: every encoder MatMul. Per-row activations take the trained
/// checkpoint's token agreement from 93-95% to about 97% (docs/GRAPHS.md); the decoder, 50 dB
/// from float32 without them, keeps the cheaper per-tensor quantization.
pub const DEFAULT_PER_ROW: &[&str] = &["encoder.*"];

/// The default two-step patterns ([`Int8Policy::two_step`]): the encoder's feed-forward output
/// projections, whose heavy-tailed GEGLU activations lose the most to 8-bit rows (each alone
/// flips 0.7 to 1.1% of the trained checkpoint's tokens; in two steps each gives back 0.1 to
/// 0.3 points, and only all of them together reach 98% on every set, docs/GRAPHS.md).
pub const DEFAULT_TWO_STEP: &[&str] = &["encoder.*.3.4.weight"];

/// What the int8 pass quantizes.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Policy {
    /// Glob patterns (`*` any run of characters, `?` one) on a candidate MatMul's weight
    /// initializer (its state-dict key, with the `[a:b]` row range where a layer is a slice of
    /// a fused weight, e.g. `encoder.enc_spatial_transformer.layers.1.1.qkv.weight[0:128]`)
    /// or on its node name: matching candidates stay float. Each pattern must match something.
    pub keep_float: Vec<String>,
    pub granularity: Granularity,
    /// One `DynamicQuantizeLinear` per activation that several MatMuls read (Q/K/V, the two
    /// FFN input MatMuls) instead of one quantization inside each `DynamicQuantizeMatMul`.
    pub share_activation_quant: bool,
    /// Largest weight magnitude in int8 steps (127: the full range).
    pub weight_max: u8,
    /// Largest `|q[2j]| + |q[2j+1]|` of two weights adjacent along K in one column (the
    /// scale is widened until every pair fits). ONNX Runtime's AVX2 and AVX-512BW uint8 x int8
    /// kernels (`vpmaddubsw`) add the products of exactly such pairs in int16 and saturate
    /// past 32767; 128 keeps every pair within 255 x 128 = 32640, so the graph as stored
    /// computes the same integers on every CPU (its VNNI kernels sum in 32 bits). `None` (the
    /// default), or a bound past 128 with weights past 64, makes graphs exact as stored only on
    /// VNNI CPUs, and they say so ([`META_CPU`]): elsewhere the elements run them with uint8
    /// weights, exact but on slower kernels. The bound widens the weight steps 1.5-1.7x and
    /// costs the trained checkpoint 0.3-0.6 points of token agreement (docs/GRAPHS.md). A
    /// weight max of 64 needs no bound (two of them make 128).
    pub pair_max: Option<u16>,
    /// Glob patterns (as for `keep_float`) of MatMuls whose activation is quantized per row
    /// (per token) instead of per tensor: each row with the step `r / 127`, `r` its largest
    /// magnitude, around zero point 128; the integer product is multiplied by the row's step
    /// (and the bias added after). Each token then gets the whole uint8 range instead of a
    /// share of the range of the whole tensor, which the tokens with the largest activations
    /// set. Each pattern must match a candidate (one kept float has no quantization).
    pub per_row: Vec<String>,
    /// Glob patterns (as for `keep_float`) of per-row MatMuls whose activation is quantized in
    /// two steps: the row's byte `q` as usual, then the rounding residual `x - s (q - 128)`
    /// (within half a step) with the step `s / 254` as a second byte; two integer products,
    /// the second scaled by 1/254, make a product of about 16-bit activations with the same
    /// int8 weights. Each pattern must match a candidate; a match kept float or quantized per
    /// tensor has one step or none (the report counts the two-step MatMuls).
    pub two_step: Vec<String>,
}

impl Default for Int8Policy {
    fn default() -> Self {
        Int8Policy {
            keep_float: DEFAULT_KEEP_FLOAT.iter().map(|s| s.to_string()).collect(),
            granularity: Granularity::PerChannel,
            share_activation_quant: true,
            weight_max: 127,
            pair_max: None,
            per_row: DEFAULT_PER_ROW.iter().map(|s| s.to_string()).collect(),
            two_step: DEFAULT_TWO_STEP.iter().map(|s| s.to_string()).collect(),
        }
    }
}

impl Int8Policy {
    /// The default policy with `keep_float` replaced by `patterns` (the CLI's
    /// `--int8-keep-float`); no patterns keep the default list, `none` keeps nothing float.
    pub fn with_keep_float(patterns: &[String]) -> Self {
        Int8Policy::default().replacing_keep_float(patterns)
    }

    /// `keep_float` replaced by `patterns` as [`Int8Policy::with_keep_float`] does, from
    /// this policy's list.
    pub fn replacing_keep_float(mut self, patterns: &[String]) -> Self {
        self.keep_float = replace_list(&self.keep_float, patterns);
        self
    }

    /// `per_row` replaced the same way (the CLI's `--int8-per-row`).
    pub fn with_per_row(mut self, patterns: &[String]) -> Self {
        self.per_row = replace_list(&self.per_row, patterns);
        self
    }

    /// `two_step` replaced the same way (the CLI's `--int8-two-step`).
    pub fn with_two_step(mut self, patterns: &[String]) -> Self {
        self.two_step = replace_list(&self.two_step, patterns);
        self
    }

    /// `omnitok.int8_cpu`: `any` or `x86-vnni` (see [`META_CPU`]).
    pub fn cpu(&self) -> &'static str {
        let pairs_fit =
            self.weight_max as u16 * 2 <= PAIR_MAX_EXACT || self.pair_max.is_some_and(|p| p <= PAIR_MAX_EXACT);
        if pairs_fit { "any" } else { "x86-vnni" }
    }

    /// `omnitok.int8_policy`: what was quantized and how, as JSON.
    pub fn to_json(&self, quantized: usize, kept: usize, per_row: usize) -> String {
        serde_json::json!({
            "weights": match self.pair_max {
                Some(p) => format!(
                    "int8 symmetric {}, |q| <= {}, |q[2j]| + |q[2j+1]| <= {p} along K",
                    self.granularity.as_str(),
                    self.weight_max
                ),
                None => format!("int8 symmetric {}, |q| <= {}", self.granularity.as_str(), self.weight_max),
            },
            "activations": if self.share_activation_quant {
                "uint8 dynamic per tensor, one DynamicQuantizeLinear per shared input"
            } else {
                "uint8 dynamic per tensor, inside each DynamicQuantizeMatMul"
            },
            "per_row": self.per_row,
            "per_row_activations": "uint8 per row: step max|row| / 127, zero point 128 (QuantizeLinear per axis); a product whose only use is a Mul feeding another per-row quantization keeps its row step for that quantization's rescale",
            "per_row_matmuls": per_row,
            "two_step": self.two_step,
            "two_step_activations": "the row's byte, then the rounding residual with step / 254 as a second byte; two integer products, the second times 1/254",
            "cpu": self.cpu(),
            "keep_float": self.keep_float,
            "always_float": "codebook distances and argmin, pre_vq_conv, post_vq_conv, RoPE, attention, normalisation, PEG convolutions",
            "quantized_matmuls": quantized,
            "float_matmuls": kept,
        })
        .to_string()
    }
}

/// A pattern list given on the command line: none given keeps `default`, `none` empties it.
fn replace_list(default: &[String], patterns: &[String]) -> Vec<String> {
    if patterns.iter().any(|s| s == "none") {
        Vec::new()
    } else if patterns.is_empty() {
        default.to_vec()
    } else {
        patterns.to_vec()
    }
}

/// What [`quantize`] did to one graph.
#[derive(Debug, Clone, Default)]
pub struct GraphReport {
    /// Weight names of the MatMuls now in int8.
    pub quantized: Vec<String>,
    /// Weight names of candidates kept float by a pattern.
    pub kept_float: Vec<String>,
    /// `DynamicQuantizeLinear` nodes added (shared activation quantizations).
    pub shared_quantizations: usize,
    /// Bias Adds folded into the integer MatMul.
    pub folded_biases: usize,
    /// Quantized MatMuls whose activation is scaled per row.
    pub per_row: usize,
    /// Per-row MatMuls whose rescale is carried into the next per-row quantization instead.
    pub carried_row_scales: usize,
    /// Per-row MatMuls left unscaled because a normalisation of each row follows
    /// ([`crate::graph::ROW_SCALE_CANCELS`]: Q and K before their L2 normalisation).
    pub cancelled_row_scales: usize,
    /// Per-row MatMuls whose activation is quantized in two steps ([`Int8Policy::two_step`]).
    pub two_step: usize,
}

/// What [`quantize_pair`] did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub encoder: GraphReport,
    pub decoder: GraphReport,
}

/// The candidates of a graph: `(node name, weight initializer name)` of each MatMul whose
/// weight is a rank-2 float initializer of an `encoder.` / `decoder.` state-dict key.
pub fn candidates(model: &ModelProto) -> Vec<(String, String)> {
    let Some(g) = model.graph.as_ref() else {
        return Vec::new();
    };
    let inits: HashMap<&str, &TensorProto> = g.initializer.iter().map(|t| (t.name(), t)).collect();
    g.node
        .iter()
        .filter(|n| is_candidate(n, &inits))
        .map(|n| (n.name().to_string(), n.input[1].clone()))
        .collect()
}

fn is_candidate(n: &NodeProto, inits: &HashMap<&str, &TensorProto>) -> bool {
    if n.op_type() != "MatMul" || !n.domain().is_empty() || n.input.len() != 2 {
        return false;
    }
    let w = n.input[1].as_str();
    (w.starts_with("encoder.") || w.starts_with("decoder."))
        && inits
            .get(w)
            .is_some_and(|t| t.dims.len() == 2 && t.elem_type() == DataType::Float && !t.is_external())
}

/// The candidate MatMuls the policy quantizes (node indices, in node order) and the weights
/// of those its keep-float patterns leave float.
fn chosen_matmuls(
    g: &GraphProto,
    inits: &HashMap<&str, &TensorProto>,
    policy: &Int8Policy,
) -> (Vec<usize>, Vec<String>) {
    let (mut chosen, mut kept) = (Vec::new(), Vec::new());
    for (i, n) in g.node.iter().enumerate() {
        if !is_candidate(n, inits) {
            continue;
        }
        if any_match(&policy.keep_float, n.name(), &n.input[1]) {
            kept.push(n.input[1].clone());
        } else {
            chosen.push(i);
        }
    }
    (chosen, kept)
}

/// Whether a pattern of `patterns` matches a candidate's weight or node name.
fn any_match(patterns: &[String], node: &str, weight: &str) -> bool {
    patterns.iter().any(|p| glob_match(p, weight) || glob_match(p, node))
}

/// Every pattern of the option `flag` is non-empty and matches one of the `(node, weight)`
/// candidates.
fn check_patterns(flag: &str, patterns: &[String], all: &[(String, String)]) -> Result<()> {
    for p in patterns {
        if p.is_empty() {
            bail!("{flag}: empty pattern");
        }
        if !all.iter().any(|(n, w)| any_match(std::slice::from_ref(p), n, w)) {
            bail!(
                "{flag} pattern '{p}' matches no weight MatMul (patterns match a weight's \
                 state-dict key such as '{}' or a node name such as '{}'; '*' matches any run of characters)",
                all.first().map(|c| c.1.as_str()).unwrap_or("?"),
                all.first().map(|c| c.0.as_str()).unwrap_or("?"),
            );
        }
    }
    Ok(())
}

/// Quantizes both graphs with one policy, checks that every keep-float and per-row pattern matched a
/// candidate of one of them, and records `omnitok.precision` and `omnitok.int8_policy`.
pub fn quantize_pair(encoder: &mut ModelProto, decoder: &mut ModelProto, policy: &Int8Policy) -> Result<Report> {
    let all: Vec<(String, String)> = candidates(encoder).into_iter().chain(candidates(decoder)).collect();
    check_patterns("--int8-keep-float", &policy.keep_float, &all)?;
    check_patterns("--int8-per-row", &policy.per_row, &all)?;
    check_patterns("--int8-two-step", &policy.two_step, &all)?;
    if !(1..=127).contains(&policy.weight_max) {
        bail!("--int8-weight-max {}: expected 1 to 127", policy.weight_max);
    }
    if let Some(p) = policy.pair_max
        && !PAIR_MAX_RANGE.contains(&p)
    {
        bail!("--int8-pair-max {p}: expected 2 to 254, or none");
    }
    let encoder_report = quantize(encoder, policy).context("quantizing the encoder")?;
    let decoder_report = quantize(decoder, policy).context("quantizing the decoder")?;
    Ok(Report {
        encoder: encoder_report,
        decoder: decoder_report,
    })
}

/// Rewrites one graph's candidate MatMuls (those no pattern keeps float) into integer
/// MatMuls and records the precision and policy in its metadata.
pub fn quantize(model: &mut ModelProto, policy: &Int8Policy) -> Result<GraphReport> {
    let mut report = GraphReport::default();
    {
        let g = model.graph.as_mut().context("model without a graph")?;
        rewrite(g, policy, &mut report)?;
    }
    if !report.quantized.is_empty() && model.opset("com.microsoft").is_none() {
        model
            .opset_import
            .push(crate::onnx::OperatorSetIdProto::new("com.microsoft", 1));
    }
    model.set_metadata(META_PRECISION, Precision::Int8.as_str());
    model.set_metadata(META_CPU, policy.cpu());
    model.set_metadata(
        META_POLICY,
        policy.to_json(report.quantized.len(), report.kept_float.len(), report.per_row),
    );
    Ok(report)
}

/// Exports preset `name` with seeded random weights, quantized with `policy`, into `dir`
/// (tests, benchmarks, demos; the int8 counterpart of [`crate::write_random_preset`]).
pub fn write_random_preset_int8(
    name: &str,
    seed: u64,
    intermediates: bool,
    policy: &Int8Policy,
    dir: &std::path::Path,
) -> Result<[crate::onnx::SaveReport; 2]> {
    let p = crate::config::preset(name)?;
    let weights = crate::Weights::new(crate::Source::Random(seed));
    let opts = crate::ExportOptions {
        attention: p.attention,
        intermediates,
    };
    let provenance = crate::Provenance::Random {
        preset: name.into(),
        seed,
    };
    let mut e = crate::build(&p.config(), &weights, opts, &provenance)?;
    quantize_pair(&mut e.encoder, &mut e.decoder, policy)?;
    crate::write(e, dir)
}

/// For measurements: leaves the float32 graph as it is except that every weight the policy
/// would quantize is replaced by its int8 rounding (`q * scale`), so running it shows what
/// the weight rounding alone changes. Returns how many weights were rounded.
pub fn round_weights_only(model: &mut ModelProto, policy: &Int8Policy) -> Result<usize> {
    let g = model.graph.as_mut().context("model without a graph")?;
    let inits: HashMap<&str, &TensorProto> = g.initializer.iter().map(|t| (t.name(), t)).collect();
    let chosen: HashSet<String> = chosen_matmuls(g, &inits, policy)
        .0
        .into_iter()
        .map(|i| g.node[i].input[1].clone())
        .collect();
    for t in g.initializer.iter_mut().filter(|t| chosen.contains(t.name())) {
        let (k, n) = (t.dims[0] as usize, t.dims[1] as usize);
        let (q, scales) = quantize_weight(
            &f32_values(t)?,
            k,
            n,
            policy.granularity,
            policy.weight_max,
            policy.pair_max,
        );
        let rounded: Vec<f32> = q
            .iter()
            .enumerate()
            .map(|(i, &v)| v as f32 * scales[if scales.len() == 1 { 0 } else { i % n }])
            .collect();
        *t = TensorProto::from_f32(t.name().to_string(), &[k as i64, n as i64], &rounded);
    }
    Ok(chosen.len())
}

fn f32_values(t: &TensorProto) -> Result<Vec<f32>> {
    if let Some(raw) = &t.raw_data {
        Ok(raw
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect())
    } else if !t.float_data.is_empty() {
        Ok(t.float_data.clone())
    } else {
        bail!("initializer {} has no inline float data", t.name())
    }
}

/// Symmetric int8 quantization of a `[k, n]` row-major weight: values in [-qmax, qmax], one
/// scale per column (per channel) or one for all; a zero scale (all-zero weight) becomes 1.
/// With `pair_max`, the scale is also wide enough that every two weights adjacent along K
/// (rows 2j and 2j + 1 of a column) stay within `pair_max` steps together:
/// `|q[2j]| + |q[2j+1]| <= pair_max` ([`Int8Policy::pair_max`]).
pub fn quantize_weight(
    w: &[f32],
    k: usize,
    n: usize,
    granularity: Granularity,
    qmax: u8,
    pair_max: Option<u16>,
) -> (Vec<i8>, Vec<f32>) {
    let qmax = qmax.clamp(1, 127) as f32;
    assert_eq!(w.len(), k * n);
    let per_channel = granularity == Granularity::PerChannel;
    let group = |c: usize| if per_channel { c } else { 0 };
    let groups = if per_channel { n } else { 1 };
    // per group: the largest magnitude, and the largest sum of a pair's magnitudes
    let (mut max, mut pair) = (vec![0f32; groups], vec![0f32; groups]);
    for r in 0..k {
        for c in 0..n {
            let (g, a) = (group(c), w[r * n + c].abs());
            max[g] = max[g].max(a);
            let partner = if r % 2 == 1 { w[(r - 1) * n + c].abs() } else { 0.0 };
            pair[g] = pair[g].max(a + partner);
        }
    }
    let scales: Vec<f32> = (0..groups)
        .map(|g| {
            let need = match pair_max {
                Some(p) => (max[g] / qmax).max(pair[g] / p as f32),
                None => max[g] / qmax,
            };
            if need > 0.0 { need } else { 1.0 }
        })
        .collect();
    let mut q: Vec<i8> = (0..k * n)
        .map(|i| (w[i] / scales[group(i % n)]).round_ties_even().clamp(-qmax, qmax) as i8)
        .collect();
    // rounding (and float error in w / s) can leave a pair one step over: the step comes off
    // the larger of the two
    if let Some(p) = pair_max {
        for r in (1..k).step_by(2) {
            for c in 0..n {
                let (i, j) = ((r - 1) * n + c, r * n + c);
                while (q[i] as i32).abs() + (q[j] as i32).abs() > p as i32 {
                    let big = if q[i].unsigned_abs() >= q[j].unsigned_abs() {
                        i
                    } else {
                        j
                    };
                    q[big] -= q[big].signum();
                }
            }
        }
    }
    (q, scales)
}

/// Initializers of the per-row quantization: the last axis, the floor of a row's largest
/// magnitude, 1/127, `[-1]` (flatten), 1 (the integer product's scale) and the uint8 zero
/// point 128.
const ROW_LAST_AXIS: &str = "omnitok.int8/last_axis";
const ROW_FLOOR: &str = "omnitok.int8/row_max_floor";
const ROW_INV_127: &str = "omnitok.int8/inv_127";
const ROW_FLAT: &str = "omnitok.int8/flat";
const ROW_ONE: &str = "omnitok.int8/one";
const ROW_INV_254: &str = "omnitok.int8/inv_254";
const ROW_ZP_128: &str = "omnitok.int8/zero_point_128";
/// The weights' zero point, 0 (symmetric int8), given explicitly to every integer MatMul: the
/// elements rewrite full-range weights to uint8 with zero point 128 on CPUs whose uint8 x int8
/// kernels would saturate (gst-plugin-omnitok `runtime::unsigned_weights`), which needs an
/// initializer to rewrite.
pub const WEIGHT_ZP: &str = "omnitok.int8/weight_zero_point";

/// The shape `[-1, k]`: an activation as rows of `k`.
/// The value `what` (`step`, `q`, ...) of the per-row quantization of activation `x`.
fn row_quant_value(x: &str, what: &str) -> String {
    format!("{x}/rowquant:{what}")
}

fn rows_by(k: usize) -> String {
    format!("omnitok.int8/rows_by_{k}")
}

fn rewrite(g: &mut GraphProto, policy: &Int8Policy, report: &mut GraphReport) -> Result<()> {
    let inits: HashMap<&str, &TensorProto> = g.initializer.iter().map(|t| (t.name(), t)).collect();
    // which MatMuls to quantize, in node order
    let (chosen, kept) = chosen_matmuls(g, &inits, policy);
    report.kept_float.extend(kept);
    if chosen.is_empty() {
        return Ok(());
    }
    // consumers of every value, for bias folding and removing dead weights
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for inp in &n.input {
            consumers.entry(inp.as_str()).or_default().push(i);
        }
    }
    let graph_outputs: HashSet<&str> = g.output.iter().map(|o| o.name()).collect();
    // activations read by several chosen MatMuls share one quantization
    let mut readers: HashMap<String, usize> = HashMap::new();
    for &i in &chosen {
        *readers.entry(g.node[i].input[0].clone()).or_default() += 1;
    }

    // activations scaled per row: read by a chosen MatMul that a per-row pattern matches
    let per_row_inputs: HashSet<String> = chosen
        .iter()
        .map(|&i| &g.node[i])
        .filter(|n| any_match(&policy.per_row, n.name(), &n.input[1]))
        .map(|n| n.input[0].clone())
        .collect();
    // per-row activations quantized in two steps (a byte and its rounding residual's byte)
    let two_step_inputs: HashSet<String> = chosen
        .iter()
        .map(|&i| &g.node[i])
        .filter(|n| per_row_inputs.contains(&n.input[0]) && any_match(&policy.two_step, n.name(), &n.input[1]))
        .map(|n| n.input[0].clone())
        .collect();

    struct Plan {
        weight: String,
        k: usize,
        n: usize,
        /// the bias Add folded into this MatMul: (node index, bias name, output)
        bias: Option<(usize, String, String)>,
    }
    let mut plans: HashMap<usize, Plan> = HashMap::new();
    for &i in &chosen {
        let n = &g.node[i];
        let w = inits[n.input[1].as_str()];
        let (k, cols) = (w.dims[0] as usize, w.dims[1] as usize);
        let out = n.output[0].as_str();
        let mut bias = None;
        if let Some(cs) = consumers.get(out)
            && cs.len() == 1
            && !graph_outputs.contains(out)
        {
            let add = &g.node[cs[0]];
            if add.op_type() == "Add" && add.domain().is_empty() && add.input.len() == 2 {
                let other = if add.input[0] == out {
                    &add.input[1]
                } else {
                    &add.input[0]
                };
                if let Some(b) = inits.get(other.as_str())
                    && b.elem_type() == DataType::Float
                    && b.dims == [cols as i64]
                {
                    bias = Some((cs[0], other.clone(), add.output[0].clone()));
                }
            }
        }
        plans.insert(
            i,
            Plan {
                weight: n.input[1].clone(),
                k,
                n: cols,
                bias,
            },
        );
    }

    // Per-row rescales carried forward. Quantizing a row per row does not depend on the
    // row's scale: when a per-row MatMul's product (no bias) is read only by a Mul whose
    // result is in turn read only by per-row MatMuls (the GEGLU value half times the GELU of
    // the gate, then the feed-forward output), the product stays unscaled and its row step
    // multiplies the later MatMuls' rescale instead: one full-size Mul less.
    // carried: the Mul's output -> the row step it carries; carrying: the MatMuls skipped
    let chosen_set: HashSet<usize> = chosen.iter().copied().collect();
    let mut carried: HashMap<String, String> = HashMap::new();
    let mut carrying: HashSet<usize> = HashSet::new();
    for &i in &chosen {
        let n = &g.node[i];
        let out = n.output[0].as_str();
        if plans[&i].bias.is_some() || !per_row_inputs.contains(&n.input[0]) || graph_outputs.contains(out) {
            continue;
        }
        let Some(&[m]) = consumers.get(out).map(Vec::as_slice) else {
            continue;
        };
        let mul = &g.node[m];
        let y = mul.output[0].as_str();
        let only_per_row_matmuls = consumers
            .get(y)
            .is_some_and(|cs| cs.iter().all(|c| chosen_set.contains(c)));
        if mul.op_type() == "Mul"
            && mul.domain().is_empty()
            && mul.input.len() == 2
            && mul.input[0] != mul.input[1]
            && per_row_inputs.contains(y)
            && only_per_row_matmuls
            && !graph_outputs.contains(y)
            && !carried.contains_key(y)
        {
            carried.insert(y.to_string(), row_quant_value(&n.input[0], "step"));
            carrying.insert(i);
        }
    }

    // Per-row rescales that cancel: the tracer marks the MatMuls (Q, K) whose every output
    // row is normalised later, so the unscaled product serves as well as the product.
    let cancels: HashSet<usize> = chosen
        .iter()
        .copied()
        .filter(|i| {
            let n = &g.node[*i];
            plans[i].bias.is_none()
                && per_row_inputs.contains(&n.input[0])
                && !graph_outputs.contains(n.output[0].as_str())
                && n.metadata_props
                    .iter()
                    .any(|p| p.key() == crate::graph::ROW_SCALE_CANCELS && p.value() == "1")
        })
        .collect();

    // quantized weights
    let mut new_inits: Vec<TensorProto> = Vec::new();
    let mut dead: HashSet<String> = HashSet::new();
    for &i in &chosen {
        let p = &plans[&i];
        let t = inits[p.weight.as_str()];
        let (q, scales) = quantize_weight(
            &f32_values(t)?,
            p.k,
            p.n,
            policy.granularity,
            policy.weight_max,
            policy.pair_max,
        );
        let raw: Vec<u8> = q.iter().map(|&v| v as u8).collect();
        new_inits.push(TensorProto::from_raw(
            format!("{}.int8", p.weight),
            &[p.k as i64, p.n as i64],
            DataType::Int8,
            raw,
        ));
        let sdims: &[i64] = if scales.len() == 1 { &[] } else { &[p.n as i64] };
        new_inits.push(TensorProto::from_f32(format!("{}.scale", p.weight), sdims, &scales));
        if consumers.get(p.weight.as_str()).is_some_and(|c| c.len() == 1) {
            dead.insert(p.weight.clone());
        }
    }

    // the new node list
    let folded: HashSet<usize> = plans.values().filter_map(|p| p.bias.as_ref().map(|b| b.0)).collect();
    let mut quantized_inputs: HashMap<String, (String, String, String)> = HashMap::new();
    // inputs whose carried rescale step is written
    let mut rescaled: HashSet<String> = HashSet::new();
    // the K of every per-row MatMul (each needs its [-1, K] shape)
    let mut k_shapes: std::collections::BTreeSet<usize> = Default::default();
    let mut nodes = Vec::with_capacity(g.node.len() + chosen.len());
    for (i, node) in std::mem::take(&mut g.node).into_iter().enumerate() {
        if folded.contains(&i) {
            report.folded_biases += 1;
            continue;
        }
        let Some(p) = plans.get(&i) else {
            nodes.push(node);
            continue;
        };
        let x = node.input[0].clone();
        let name = node.name().to_string();
        let (bias, final_out) = match &p.bias {
            Some((_, b, out)) => (b.clone(), out.clone()),
            None => (String::new(), node.output[0].clone()),
        };
        // per row: x is quantized with its row's step s = r / 127 around 128 (uint8 1..255,
        // one QuantizeLinear); the integer product (a_scale 1, without bias) times s is the
        // MatMul, and the bias is added after
        let row_step = if per_row_inputs.contains(&x) {
            let v = |s: &str| row_quant_value(&x, s);
            if !quantized_inputs.contains_key(&x) {
                let node = |op: &str, inputs: &[&str], out: &str| {
                    NodeProto::new(
                        op,
                        format!("{out}/{op}"),
                        inputs.iter().map(|s| s.to_string()),
                        [out.to_string()],
                    )
                };
                // r = max(max(x), -min(x), floor) over the last axis: two reads of x, no |x|
                // written; keepdims defaults to 1, so r and s are [..., 1]
                nodes.push(node("ReduceMax", &[&x, ROW_LAST_AXIS], &v("max")));
                nodes.push(node("ReduceMin", &[&x, ROW_LAST_AXIS], &v("min")));
                nodes.push(node("Neg", &[&v("min")], &v("neg_min")));
                // (Max of two same-shaped tensors, then Clip: ONNX Runtime's Max with a
                // broadcast scalar is its slow variadic path)
                nodes.push(node("Max", &[&v("max"), &v("neg_min")], &v("abs_max")));
                nodes.push(node("Clip", &[&v("abs_max"), ROW_FLOOR], &v("r")));
                nodes.push(node("Mul", &[&v("r"), ROW_INV_127], &v("step")));
                // QuantizeLinear per axis 0 of x as [rows, K], with a [rows] step and zero point
                nodes.push(node("Reshape", &[&x, &rows_by(p.k)], &v("x2")));
                nodes.push(node("Reshape", &[&v("step"), ROW_FLAT], &v("step1")));
                nodes.push(node("Shape", &[&v("step1")], &v("rows")));
                let mut zp = node("ConstantOfShape", &[&v("rows")], &v("zp"));
                zp.attribute.push(crate::onnx::AttributeProto::tensor(
                    "value",
                    TensorProto::from_u8("value", &[1], &[128]),
                ));
                nodes.push(zp);
                let mut q = node("QuantizeLinear", &[&v("x2"), &v("step1"), &v("zp")], &v("q2"));
                q.attribute.push(crate::onnx::AttributeProto::int("axis", 0));
                nodes.push(q);
                nodes.push(node("Shape", &[&x], &v("shape")));
                // allowzero: a 0 in x's shape (no frames after the first, image mode) stays 0
                let mut back = node("Reshape", &[&v("q2"), &v("shape")], &v("q"));
                back.attribute.push(crate::onnx::AttributeProto::int("allowzero", 1));
                nodes.push(back);
                if two_step_inputs.contains(&x) {
                    // the residual x - s (q - 128), within half a step, with the step s / 254
                    let mut deq = node("DequantizeLinear", &[&v("q2"), &v("step1"), &v("zp")], &v("x2_hi"));
                    deq.attribute.push(crate::onnx::AttributeProto::int("axis", 0));
                    nodes.push(deq);
                    nodes.push(node("Sub", &[&v("x2"), &v("x2_hi")], &v("x2_residual")));
                    nodes.push(node("Mul", &[&v("step1"), ROW_INV_254], &v("step1_lo")));
                    let mut q = node(
                        "QuantizeLinear",
                        &[&v("x2_residual"), &v("step1_lo"), &v("zp")],
                        &v("q2_lo"),
                    );
                    q.attribute.push(crate::onnx::AttributeProto::int("axis", 0));
                    nodes.push(q);
                    let mut back = node("Reshape", &[&v("q2_lo"), &v("shape")], &v("q_lo"));
                    back.attribute.push(crate::onnx::AttributeProto::int("allowzero", 1));
                    nodes.push(back);
                }
                report.shared_quantizations += 1;
                quantized_inputs.insert(x.clone(), (v("q"), ROW_ONE.to_string(), ROW_ZP_128.to_string()));
                k_shapes.insert(p.k);
            }
            report.per_row += 1;
            // the step that rescales the product: the row's own, times a carried one
            match carried.get(&x) {
                Some(carried_step) => {
                    if rescaled.insert(x.clone()) {
                        nodes.push(NodeProto::new(
                            "Mul",
                            format!("{}/Mul", v("rescale")),
                            [v("step"), carried_step.clone()],
                            [v("rescale")],
                        ));
                    }
                    Some(v("rescale"))
                }
                None => Some(v("step")),
            }
        } else {
            None
        };
        // a per-row MatMul writes the unscaled product and leaves the bias to the rescale
        // (none where a later quantization carries its step)
        let rescale = row_step
            .as_ref()
            .filter(|_| !carrying.contains(&i) && !cancels.contains(&i));
        let (mm_bias, out) = match rescale {
            Some(_) => (String::new(), format!("{name}/int8:unscaled")),
            None => (bias.clone(), final_out.clone()),
        };
        let (wq, ws) = (format!("{}.int8", p.weight), format!("{}.scale", p.weight));
        let shared = row_step.is_some() || (policy.share_activation_quant && readers[&x] > 1);
        if shared {
            if !quantized_inputs.contains_key(&x) {
                let base = format!("{x}/quant");
                let outs = (
                    format!("{base}:q"),
                    format!("{base}:scale"),
                    format!("{base}:zero_point"),
                );
                nodes.push(NodeProto::new(
                    "DynamicQuantizeLinear",
                    format!("{name}/DynamicQuantizeLinear"),
                    [x.clone()],
                    [outs.0.clone(), outs.1.clone(), outs.2.clone()],
                ));
                report.shared_quantizations += 1;
                quantized_inputs.insert(x.clone(), outs);
            }
            let (xq, xs, xz) = &quantized_inputs[&x];
            let two_step = two_step_inputs.contains(&x);
            // two steps: the first byte's product and the residual byte's (times 1/254), added
            let hi = if two_step {
                format!("{name}/int8:hi")
            } else {
                out.clone()
            };
            let mut inputs = vec![
                xq.clone(),
                wq.clone(),
                xs.clone(),
                ws.clone(),
                xz.clone(),
                WEIGHT_ZP.to_string(),
            ];
            if !mm_bias.is_empty() {
                inputs.push(mm_bias);
            }
            nodes.push(
                NodeProto::new("MatMulIntegerToFloat", format!("{name}/int8"), inputs, [hi.clone()])
                    .with_domain("com.microsoft"),
            );
            if two_step {
                let lo = format!("{name}/int8:lo");
                let inputs = [
                    row_quant_value(&x, "q_lo"),
                    wq,
                    ROW_INV_254.to_string(),
                    ws,
                    xz.clone(),
                    WEIGHT_ZP.to_string(),
                ];
                nodes.push(
                    NodeProto::new("MatMulIntegerToFloat", format!("{name}/int8_lo"), inputs, [lo.clone()])
                        .with_domain("com.microsoft"),
                );
                nodes.push(NodeProto::new(
                    "Add",
                    format!("{name}/int8/Add"),
                    [hi, lo],
                    [out.clone()],
                ));
                report.two_step += 1;
            }
        } else {
            let mut inputs = vec![x, wq, ws, WEIGHT_ZP.to_string()];
            if !mm_bias.is_empty() {
                inputs.push(mm_bias);
            }
            nodes.push(
                NodeProto::new("DynamicQuantizeMatMul", format!("{name}/int8"), inputs, [out.clone()])
                    .with_domain("com.microsoft"),
            );
        }
        if let Some(step) = rescale {
            let scaled = if bias.is_empty() {
                final_out.clone()
            } else {
                format!("{name}/int8:rescaled")
            };
            nodes.push(NodeProto::new(
                "Mul",
                format!("{name}/rowscale/Mul"),
                [out, step.clone()],
                [scaled.clone()],
            ));
            if !bias.is_empty() {
                nodes.push(NodeProto::new(
                    "Add",
                    format!("{name}/rowscale/Add"),
                    [scaled, bias],
                    [final_out],
                ));
            }
        }
        report.quantized.push(p.weight.clone());
    }
    report.carried_row_scales += carrying.len();
    report.cancelled_row_scales += cancels.len();
    g.node = nodes;
    if !k_shapes.is_empty() {
        new_inits.push(TensorProto::from_i64(ROW_LAST_AXIS, &[1], &[-1]));
        new_inits.push(TensorProto::from_f32(ROW_FLOOR, &[], &[1e-30]));
        new_inits.push(TensorProto::from_f32(ROW_INV_127, &[], &[1.0 / 127.0]));
        new_inits.push(TensorProto::from_i64(ROW_FLAT, &[1], &[-1]));
        new_inits.push(TensorProto::from_f32(ROW_ONE, &[], &[1.0]));
        if !two_step_inputs.is_empty() {
            new_inits.push(TensorProto::from_f32(ROW_INV_254, &[], &[1.0 / 254.0]));
        }
        new_inits.push(TensorProto::from_u8(ROW_ZP_128, &[], &[128]));
        for k in k_shapes {
            new_inits.push(TensorProto::from_i64(rows_by(k), &[2], &[-1, k as i64]));
        }
    }
    if !report.quantized.is_empty() {
        new_inits.push(TensorProto::from_raw(WEIGHT_ZP, &[], DataType::Int8, vec![0]));
    }
    g.initializer.retain(|t| !dead.contains(t.name()));
    g.initializer.extend(new_inits);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precision_parses_and_refuses() {
        assert_eq!("f32".parse::<Precision>().unwrap(), Precision::F32);
        assert_eq!("int8".parse::<Precision>().unwrap(), Precision::Int8);
        let e = "int4".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("unknown precision 'int4'"), "{e}");
    }

    #[test]
    fn weights_quantize_symmetrically_per_channel_and_per_tensor() {
        // [2, 3]: columns with max 2, 0.5, 0
        let w = [2.0, -0.5, 0.0, -1.0, 0.25, 0.0];
        let (q, s) = quantize_weight(&w, 2, 3, Granularity::PerChannel, 127, None);
        assert_eq!(s, vec![2.0 / 127.0, 0.5 / 127.0, 1.0]);
        assert_eq!(q, vec![127, -127, 0, -64, 64, 0]);
        let (q, s) = quantize_weight(&w, 2, 3, Granularity::PerTensor, 127, None);
        assert_eq!(s, vec![2.0 / 127.0]);
        assert_eq!(q, vec![127, -32, 0, -64, 16, 0]);
        // dequantized error at most half a step
        for (i, &v) in w.iter().enumerate() {
            assert!((q[i] as f32 * s[0] - v).abs() <= s[0] / 2.0 + 1e-7);
        }
        let (q, s) = quantize_weight(&w, 2, 3, Granularity::PerChannel, 64, None);
        assert_eq!(s, vec![2.0 / 64.0, 0.5 / 64.0, 1.0]);
        assert_eq!(q, vec![64, -64, 0, -32, 32, 0]);
    }

    #[test]
    fn pairs_along_k_stay_within_the_bound_that_keeps_int16_sums_exact() {
        // column 0: a pair 2 + 1.9 sets the scale (3.9 / 128), not the largest weight;
        // column 1: one large weight beside small ones keeps the full range (2 / 127)
        // [3, 3]: rows 0 and 1 pair up, row 2 has no partner
        let w = [2.0, 2.0, 0.3, 1.9, 0.0, -0.2, 0.5, -0.1, 0.1];
        let (q, s) = quantize_weight(&w, 3, 3, Granularity::PerChannel, 127, Some(128));
        assert_eq!(s[0], 3.9 / 128.0);
        assert_eq!(s[1], 2.0 / 127.0);
        assert_eq!(q[0] as i32 + q[3] as i32, 128);
        assert_eq!(q[1], 127);
        // a lone last row (odd K) has no partner
        assert_eq!(q[6], (0.5f32 / s[0]).round() as i8);
        // every pair of every column within 128, on random weights and on the worst case
        // (all weights equal: the bound is then the same as |q| <= 64)
        let mut state = 12345u64;
        let mut rnd = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0
        };
        let (k, n) = (257, 64);
        let random: Vec<f32> = (0..k * n).map(|_| rnd() * 0.04).collect();
        for (w, granularity) in [
            (random.clone(), Granularity::PerChannel),
            (random, Granularity::PerTensor),
            (vec![0.03; k * n], Granularity::PerChannel),
        ] {
            let (q, s) = quantize_weight(&w, k, n, granularity, 127, Some(128));
            for r in (1..k).step_by(2) {
                for c in 0..n {
                    let (a, b) = (q[(r - 1) * n + c] as i32, q[r * n + c] as i32);
                    assert!(a.abs() + b.abs() <= 128, "rows {}/{r}, column {c}: {a} + {b}", r - 1);
                    // 255 x (a + b) products: the int16 sum a pair becomes on AVX2
                    assert!((255 * a + 255 * b).abs() <= i16::MAX as i32);
                }
            }
            for (i, &v) in w.iter().enumerate() {
                let step = s[if s.len() == 1 { 0 } else { i % n }];
                assert!((q[i] as f32 * step - v).abs() <= step * 1.5 + 1e-7);
            }
        }
    }
}
