//! `--triton-repository DIR`: a Triton Inference Server model repository for the exported
//! graphs (docs/SCALE-OUT.md): `DIR/<name>_encoder/1/model.onnx` and
//! `DIR/<name>_decoder/1/model.onnx`, each with a `config.pbtxt` for Triton's
//! `onnxruntime_onnx` platform. Inputs and outputs are the graphs' own (docs/GRAPHS.md), the
//! batch dimension being Triton's (`max_batch_size`); the `omnitok.*` metadata is repeated in
//! the config's `parameters`, where the elements' remote engine reads the model's identity
//! and geometry (`GET /v2/models/<name>/config`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::onnx::proto::tensor_proto::DataType;
use crate::onnx::{Dim, ModelProto, SaveReport, ValueInfoProto};

/// Where the model instances run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum InstanceKind {
    /// `KIND_GPU`: `count` instances on every GPU the server sees.
    Gpu,
    /// `KIND_CPU`.
    Cpu,
}

/// TensorRT through ONNX Runtime's TensorRT execution provider inside Triton's onnxruntime
/// backend (`gpu_execution_accelerator`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorRtOptions {
    pub fp16: bool,
    /// `trt_engine_cache_path` (a path inside the server's file system).
    pub engine_cache: Option<String>,
    pub workspace_bytes: u64,
    /// One optimization profile for clips of `[frames, height, width]` (padded sizes):
    /// batch 1 to `max_batch_size` at that geometry.
    pub profile: Option<[u32; 3]>,
}

/// What the repository's configs say beyond the graphs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TritonOptions {
    /// Models are `<name>_encoder` and `<name>_decoder`.
    pub name: String,
    pub max_batch_size: u32,
    /// `dynamic_batching { max_queue_delay_microseconds }`.
    pub queue_delay_us: u32,
    pub instances: u32,
    pub kind: InstanceKind,
    pub tensorrt: Option<TensorRtOptions>,
}

impl TritonOptions {
    /// Refuses a name that cannot be a folder and URL segment, and zero counts.
    pub fn validate(&self) -> Result<()> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || "_-.".contains(c);
        if self.name.is_empty() || !self.name.chars().all(allowed) {
            bail!(
                "--triton-name '{}': use letters, digits, '_', '-' or '.' (it names folders and URLs)",
                self.name
            );
        }
        if self.max_batch_size == 0 || self.instances == 0 {
            bail!("--triton-max-batch and --triton-instances must be at least 1");
        }
        Ok(())
    }
}

impl Default for TritonOptions {
    fn default() -> Self {
        Self {
            name: "omnitok".into(),
            max_batch_size: 64,
            queue_delay_us: 2000,
            instances: 1,
            kind: InstanceKind::Gpu,
            tensorrt: None,
        }
    }
}

/// One input or output as a Triton config declares it (no batch dimension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Io {
    pub name: String,
    pub data_type: &'static str,
    pub dims: Vec<i64>,
}

/// What a config needs of one graph.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphIo {
    pub role: String,
    pub metadata: Vec<(String, String)>,
    pub inputs: Vec<Io>,
    pub outputs: Vec<Io>,
}

fn io(v: &ValueInfoProto) -> Result<Io> {
    let name = v.name.clone().unwrap_or_default();
    let t = v
        .tensor_type()
        .with_context(|| format!("graph value '{name}' is not a tensor"))?;
    let data_type = match DataType::try_from(t.elem_type.unwrap_or(0)) {
        Ok(DataType::Uint8) => "TYPE_UINT8",
        Ok(DataType::Int64) => "TYPE_INT64",
        Ok(DataType::Float) => "TYPE_FP32",
        Ok(DataType::Float16) => "TYPE_FP16",
        other => bail!("graph value '{name}' has an element type Triton configs here do not map: {other:?}"),
    };
    let dims = v.dims().with_context(|| format!("graph value '{name}' has no shape"))?;
    if dims.first().is_none_or(|d| matches!(d, Dim::Fixed(_))) {
        bail!("graph value '{name}' has no symbolic batch dimension first: {dims:?}");
    }
    let dims = dims[1..]
        .iter()
        .map(|d| match d {
            Dim::Fixed(v) => *v,
            Dim::Named(_) => -1,
        })
        .collect();
    Ok(Io { name, data_type, dims })
}

impl GraphIo {
    /// From a traced (and possibly quantized) graph, before it is written.
    pub fn of(model: &ModelProto) -> Result<Self> {
        let graph = model.graph.as_ref().context("the model has no graph")?;
        let metadata: Vec<(String, String)> = model
            .metadata_props
            .iter()
            .map(|e| (e.key().to_string(), e.value().to_string()))
            .collect();
        let role = metadata
            .iter()
            .find(|(k, _)| k == "omnitok.role")
            .map(|(_, v)| v.clone())
            .context("the graph has no omnitok.role")?;
        Ok(Self {
            role,
            metadata,
            inputs: graph.input.iter().map(io).collect::<Result<_>>()?,
            outputs: graph.output.iter().map(io).collect::<Result<_>>()?,
        })
    }

    fn meta(&self, key: &str) -> Option<&str> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A protobuf text-format string literal.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn dims_text(dims: &[i64]) -> String {
    dims.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
}

/// The shape of one input of `io` at batch `batch` for clips `[frames, height, width]`,
/// as TensorRT profile text (`name:BxDx..`), from the graph's geometry.
fn profile_shape(io: &GraphIo, input: &Io, batch: u32, [frames, height, width]: [u32; 3]) -> Result<String> {
    let geometry: serde_json::Value = serde_json::from_str(io.meta("omnitok.geometry").unwrap_or("{}"))?;
    let g = |k: &str| geometry.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
    let (patch, tp) = (g("patch"), g("temporal_patch"));
    if patch == 0 || tp == 0 {
        bail!("the graph's omnitok.geometry has no patch sizes");
    }
    let (f, h, w) = (u64::from(frames), u64::from(height), u64::from(width));
    if f == 0 || (f - 1) % tp != 0 || h % patch != 0 || w % patch != 0 {
        bail!(
            "--triton-trt-profile {frames}x{height}x{width} does not fit the model (frames 1 + k x {tp}, sizes multiples of {patch})"
        );
    }
    let grid = [1 + (f - 1) / tp, h / patch, w / patch];
    let known: Vec<u64> = input.dims.iter().filter(|&&d| d > 0).map(|&d| d as u64).collect();
    let rest: Vec<u64> = match (input.name.as_str(), input.dims.len()) {
        ("frames", 4) => vec![f, h, w, 3],
        ("tokens", 3) => grid.to_vec(),
        ("latent", 4) => [known.first().copied().unwrap_or(0)].into_iter().chain(grid).collect(),
        (name, _) => bail!("no TensorRT profile rule for input '{name}'"),
    };
    let text: Vec<String> = std::iter::once(u64::from(batch))
        .chain(rest)
        .map(|d| d.to_string())
        .collect();
    Ok(format!("{}:{}", input.name, text.join("x")))
}

/// The `config.pbtxt` of model `model_name` for graph `io`.
pub fn config_pbtxt(model_name: &str, io: &GraphIo, opts: &TritonOptions) -> Result<String> {
    let mut s = String::new();
    writeln!(
        s,
        "# Written by omnitok-export {} (docs/SCALE-OUT.md).",
        env!("CARGO_PKG_VERSION")
    )?;
    writeln!(s, "name: {}", quoted(model_name))?;
    writeln!(s, "platform: \"onnxruntime_onnx\"")?;
    writeln!(s, "max_batch_size: {}", opts.max_batch_size)?;
    for (section, list) in [("input", &io.inputs), ("output", &io.outputs)] {
        writeln!(s, "{section} [")?;
        for (i, t) in list.iter().enumerate() {
            let sep = if i + 1 < list.len() { "," } else { "" };
            writeln!(
                s,
                "  {{ name: {} data_type: {} dims: [ {} ] }}{sep}",
                quoted(&t.name),
                t.data_type,
                dims_text(&t.dims)
            )?;
        }
        writeln!(s, "]")?;
    }
    writeln!(
        s,
        "# Triton concatenates requests along the batch dimension only: a batch forms from\n\
         # requests of the same clip geometry (frames, padded height and width); requests of\n\
         # other geometries wait for a batch of their own."
    )?;
    writeln!(
        s,
        "dynamic_batching {{ max_queue_delay_microseconds: {} }}",
        opts.queue_delay_us
    )?;
    let kind = match opts.kind {
        InstanceKind::Gpu => "KIND_GPU",
        InstanceKind::Cpu => "KIND_CPU",
    };
    writeln!(s, "instance_group [ {{ count: {} kind: {kind} }} ]", opts.instances)?;
    if let Some(trt) = &opts.tensorrt {
        let mut params = vec![("precision_mode", if trt.fp16 { "FP16" } else { "FP32" }.to_string())];
        params.push(("max_workspace_size_bytes", trt.workspace_bytes.to_string()));
        if let Some(dir) = &trt.engine_cache {
            params.push(("trt_engine_cache_enable", "1".into()));
            params.push(("trt_engine_cache_path", dir.clone()));
        }
        if let Some(clip) = trt.profile {
            for (key, batch) in [
                ("trt_profile_min_shapes", 1),
                ("trt_profile_opt_shapes", opts.max_batch_size.div_ceil(2)),
                ("trt_profile_max_shapes", opts.max_batch_size),
            ] {
                let shapes = io
                    .inputs
                    .iter()
                    .map(|i| profile_shape(io, i, batch, clip))
                    .collect::<Result<Vec<_>>>()?;
                params.push((key, shapes.join(",")));
            }
        }
        writeln!(s, "optimization {{ execution_accelerators {{")?;
        writeln!(s, "  gpu_execution_accelerator : [ {{")?;
        writeln!(s, "    name : \"tensorrt\"")?;
        for (k, v) in params {
            writeln!(s, "    parameters {{ key: {} value: {} }}", quoted(k), quoted(&v))?;
        }
        writeln!(s, "  }} ]")?;
        writeln!(s, "}} }}")?;
    }
    writeln!(
        s,
        "# The graph's omnitok.* metadata: the elements' remote engine reads the model's identity\n\
         # and geometry here (GET /v2/models/{model_name}/config)."
    )?;
    for (k, v) in io.metadata.iter().filter(|(k, _)| k.starts_with("omnitok.")) {
        writeln!(
            s,
            "parameters {{ key: {} value: {{ string_value: {} }} }}",
            quoted(k),
            quoted(v)
        )?;
    }
    Ok(s)
}

/// Hard-links `from` to `to` (same file system), else copies it.
fn place(from: &Path, to: &Path) -> Result<()> {
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to).with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

/// Writes the repository into `dir`: for each graph (with the report of its written
/// `.onnx`), `<name>_<role>/config.pbtxt` and `<name>_<role>/1/model.onnx` (plus its
/// external data file under the name the graph refers to). Returns the model folders.
pub fn write_repository(dir: &Path, opts: &TritonOptions, graphs: &[(GraphIo, &SaveReport)]) -> Result<Vec<PathBuf>> {
    opts.validate()?;
    let mut folders = Vec::new();
    for (io, report) in graphs {
        let model_name = format!("{}_{}", opts.name, io.role);
        let folder = dir.join(&model_name);
        let version = folder.join("1");
        std::fs::create_dir_all(&version).with_context(|| format!("cannot create {}", version.display()))?;
        place(&report.model_path, &version.join("model.onnx"))?;
        if let Some(data) = &report.data_path {
            place(
                data,
                &version.join(data.file_name().context("external data path has no file name")?),
            )?;
        }
        let config = folder.join("config.pbtxt");
        std::fs::write(&config, config_pbtxt(&model_name, io, opts)?)
            .with_context(|| format!("cannot write {}", config.display()))?;
        folders.push(folder);
    }
    Ok(folders)
}

/// [`write_repository`] for graphs already on disk (`encoder.onnx`, `decoder.onnx` written
/// by [`crate::write`]): each file is read back for its inputs, outputs and metadata.
pub fn write_repository_for_files(dir: &Path, opts: &TritonOptions, files: &[&Path]) -> Result<Vec<PathBuf>> {
    let mut graphs = Vec::new();
    for &f in files {
        let io = GraphIo::of(&crate::onnx::load(f)?).with_context(|| format!("{}", f.display()))?;
        let data = f.with_file_name(format!("{}.data", f.file_name().unwrap_or_default().to_string_lossy()));
        let report = SaveReport {
            model_path: f.to_path_buf(),
            model_bytes: 0,
            data_bytes: 0,
            external_tensors: 0,
            data_path: data.is_file().then_some(data),
        };
        graphs.push((io, report));
    }
    let refs: Vec<(GraphIo, &SaveReport)> = graphs.iter().map(|(io, r)| (io.clone(), r)).collect();
    write_repository(dir, opts, &refs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(dims: Vec<i64>) -> GraphIo {
        GraphIo {
            role: "encoder".into(),
            metadata: vec![
                ("omnitok.role".into(), "encoder".into()),
                (
                    "omnitok.geometry".into(),
                    r#"{"patch":4,"temporal_patch":2,"size_multiple":8}"#.into(),
                ),
                ("other".into(), "x".into()),
            ],
            inputs: vec![Io {
                name: "frames".into(),
                data_type: "TYPE_UINT8",
                dims,
            }],
            outputs: vec![Io {
                name: "tokens".into(),
                data_type: "TYPE_INT64",
                dims: vec![-1, -1, -1],
            }],
        }
    }

    #[test]
    fn config_carries_io_batching_and_metadata() {
        let c = config_pbtxt("m_encoder", &io(vec![-1, -1, -1, 3]), &TritonOptions::default()).unwrap();
        assert!(
            c.contains("platform: \"onnxruntime_onnx\"\nmax_batch_size: 64\n"),
            "{c}"
        );
        assert!(
            c.contains("{ name: \"frames\" data_type: TYPE_UINT8 dims: [ -1, -1, -1, 3 ] }"),
            "{c}"
        );
        assert!(
            c.contains("dynamic_batching { max_queue_delay_microseconds: 2000 }"),
            "{c}"
        );
        assert!(c.contains("instance_group [ { count: 1 kind: KIND_GPU } ]"), "{c}");
        // JSON values are escaped; keys other than omnitok.* stay out.
        assert!(
            c.contains(r#"parameters { key: "omnitok.geometry" value: { string_value: "{\"patch\":4,"#),
            "{c}"
        );
        assert!(!c.contains("\"other\""), "{c}");
        assert!(!c.contains("tensorrt"), "{c}");
    }

    #[test]
    fn tensorrt_settings_and_profiles() {
        let opts = TritonOptions {
            max_batch_size: 8,
            tensorrt: Some(TensorRtOptions {
                fp16: true,
                engine_cache: Some("/cache".into()),
                workspace_bytes: 1 << 30,
                profile: Some([5, 16, 24]),
            }),
            ..Default::default()
        };
        let c = config_pbtxt("m_encoder", &io(vec![-1, -1, -1, 3]), &opts).unwrap();
        for want in [
            "name : \"tensorrt\"",
            "key: \"precision_mode\" value: \"FP16\"",
            "key: \"trt_engine_cache_path\" value: \"/cache\"",
            "key: \"trt_profile_min_shapes\" value: \"frames:1x5x16x24x3\"",
            "key: \"trt_profile_opt_shapes\" value: \"frames:4x5x16x24x3\"",
            "key: \"trt_profile_max_shapes\" value: \"frames:8x5x16x24x3\"",
        ] {
            assert!(c.contains(want), "{want} not in {c}");
        }
        let bad = TritonOptions {
            tensorrt: Some(TensorRtOptions {
                profile: Some([4, 16, 24]),
                ..opts.tensorrt.clone().unwrap()
            }),
            ..opts
        };
        let e = config_pbtxt("m", &io(vec![-1, -1, -1, 3]), &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("4x16x24 does not fit the model"), "{e}");
    }

    #[test]
    fn quoting_escapes_text_format() {
        assert_eq!(quoted("a\"b\\c\nd"), r#""a\"b\\c\nd""#);
    }
}
