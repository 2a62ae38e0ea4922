//! The engine seam: what runs a graph on named tensors. [`Engine`] is all the graph
//! contract ([`super::graph`]) needs; [`OrtEngine`] runs a local ONNX Runtime session (a
//! remote inference server is another implementation). No `ort` type crosses this module's
//! public surface except through [`super::cpu_session`], the tools' door.

use std::path::Path;

use ort::ep;
use ort::memory::{AllocationDevice, Allocator, AllocatorType, MemoryInfo, MemoryType};
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use super::model::{ExecutionProvider, SessionSettings};

static CAT: std::sync::LazyLock<gst::DebugCategory> = std::sync::LazyLock::new(|| {
    gst::DebugCategory::new(
        "omnitok-engine",
        gst::DebugColorFlags::empty(),
        Some("omnitok ONNX Runtime sessions"),
    )
});

/// Element type of a tensor (the ones our graphs use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    U8,
    I64,
    F32,
}

/// A tensor's values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    U8(Vec<u8>),
    I64(Vec<i64>),
    F32(Vec<f32>),
}

impl TensorData {
    pub fn dtype(&self) -> DType {
        match self {
            Self::U8(_) => DType::U8,
            Self::I64(_) => DType::I64,
            Self::F32(_) => DType::F32,
        }
    }
}

/// A shaped tensor, as inference servers exchange them (name apart).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// Why an engine could not run a graph.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EngineError {
    #[error("cannot build input '{name}': {reason}")]
    Input { name: String, reason: String },
    #[error("ONNX Runtime: {0}")]
    Run(String),
    #[error("inference server: {0}")]
    Remote(String),
    #[error("output '{name}': {reason}")]
    Output { name: String, reason: String },
}

/// Runs one graph: named inputs in, the named outputs (of the asked element types) out, in
/// the order asked.
pub trait Engine: Send {
    fn run(&mut self, inputs: Vec<(&str, Tensor)>, outputs: &[(&str, DType)]) -> Result<Vec<Tensor>, EngineError>;
}

/// A local ONNX Runtime session, run through I/O binding: on a GPU provider the inputs are
/// staged in pinned (page-locked) host memory and the outputs written into pinned host
/// memory, so each batch crosses PCIe once each way by DMA, with no pageable bounce copy;
/// on CPU inputs and outputs stay in ordinary host memory.
pub(crate) struct OrtEngine {
    session: Session,
    /// Where inputs are staged and outputs land.
    host: HostMemory,
    /// A pinned run has succeeded (until then a refusal falls back to ordinary memory).
    pinned_ok: bool,
}

enum HostMemory {
    /// CPU provider (or pinned memory refused): ordinary host memory.
    Plain(MemoryInfo<'static>),
    /// GPU provider: a pinned-host allocator of the session, and its memory description.
    Pinned(Allocator, MemoryInfo<'static>),
}

fn plain_host() -> ort::Result<HostMemory> {
    Ok(HostMemory::Plain(MemoryInfo::new(
        AllocationDevice::CPU,
        0,
        AllocatorType::Device,
        MemoryType::Default,
    )?))
}

fn pinned_host(session: &Session, device_id: i32) -> ort::Result<HostMemory> {
    let info = |t| MemoryInfo::new(AllocationDevice::CUDA_PINNED, device_id, AllocatorType::Device, t);
    let allocator = Allocator::new(session, info(MemoryType::CPUInput)?)?;
    Ok(HostMemory::Pinned(allocator, info(MemoryType::CPUOutput)?))
}

/// A warning in the GStreamer log when GStreamer runs, else on stderr (tools).
fn warn(msg: &str) {
    if gst::INITIALIZED.load(std::sync::atomic::Ordering::SeqCst) {
        gst::warning!(CAT, "{msg}");
    } else {
        eprintln!("omnitok: {msg}");
    }
}

impl OrtEngine {
    /// An engine on `session`, which runs on `provider` (the one really active).
    pub(crate) fn new(session: Session, provider: ExecutionProvider, device_id: i32) -> Result<Self, SessionError> {
        let err = |e: ort::Error| SessionError::Ort(e.to_string());
        let host = match provider {
            // (a remote model never has an ONNX Runtime session)
            ExecutionProvider::Cpu | ExecutionProvider::Remote => plain_host().map_err(err)?,
            ExecutionProvider::Cuda | ExecutionProvider::TensorRt => match pinned_host(&session, device_id) {
                Ok(h) => h,
                Err(e) => {
                    warn(&format!(
                        "pinned host memory refused ({e}); batches go through ordinary host memory"
                    ));
                    plain_host().map_err(err)?
                }
            },
        };
        Ok(Self {
            session,
            host,
            pinned_ok: false,
        })
    }

    fn run_bound(
        &mut self,
        inputs: Vec<(&str, Tensor)>,
        outputs: &[(&str, DType)],
    ) -> Result<Vec<Tensor>, EngineError> {
        let run = |e: ort::Error| EngineError::Run(e.to_string());
        let (pinned, out_info) = match &self.host {
            HostMemory::Plain(info) => (None, info),
            HostMemory::Pinned(a, info) => (Some(a), info),
        };
        let mut binding = self.session.create_binding().map_err(run)?;
        for (name, t) in inputs {
            let v = ort_value(name, t, pinned)?;
            binding.bind_input(name, &v).map_err(|e| EngineError::Input {
                name: name.to_string(),
                reason: e.to_string(),
            })?;
        }
        for &(name, _) in outputs {
            binding
                .bind_output_to_device(name, out_info)
                .map_err(|e| EngineError::Output {
                    name: name.to_string(),
                    reason: e.to_string(),
                })?;
        }
        let out = self.session.run_binding(&binding).map_err(run)?;
        outputs
            .iter()
            .map(|&(name, dtype)| match out.get(name) {
                Some(v) => extract(v, name, dtype),
                None => Err(EngineError::Output {
                    name: name.to_string(),
                    reason: "the graph has no such output".into(),
                }),
            })
            .collect()
    }
}

/// A tensor of `t`'s values: its own vector (CPU), or a copy in pinned memory from `pinned`.
fn ort_value(name: &str, t: Tensor, pinned: Option<&Allocator>) -> Result<ort::value::DynValue, EngineError> {
    let err = |e: ort::Error| EngineError::Input {
        name: name.to_string(),
        reason: e.to_string(),
    };
    fn staged<T: ort::value::PrimitiveTensorElementType + std::fmt::Debug + Copy + 'static>(
        shape: Vec<usize>,
        v: Vec<T>,
        pinned: Option<&Allocator>,
    ) -> ort::Result<ort::value::DynValue> {
        match pinned {
            None => Ok(ort::value::Tensor::from_array((shape, v))?.into_dyn()),
            Some(a) => {
                let mut t = ort::value::Tensor::<T>::new(a, shape)?;
                t.extract_tensor_mut().1.copy_from_slice(&v);
                Ok(t.into_dyn())
            }
        }
    }
    let shape = t.shape;
    match t.data {
        TensorData::U8(v) => staged(shape, v, pinned),
        TensorData::I64(v) => staged(shape, v, pinned),
        TensorData::F32(v) => staged(shape, v, pinned),
    }
    .map_err(err)
}

fn extract(value: &ort::value::DynValue, name: &str, dtype: DType) -> Result<Tensor, EngineError> {
    let err = |e: ort::Error| EngineError::Output {
        name: name.to_string(),
        reason: e.to_string(),
    };
    let dims = |s: &ort::value::Shape| s.iter().map(|&d| d.max(0) as usize).collect::<Vec<_>>();
    Ok(match dtype {
        DType::U8 => {
            let (s, v) = value.try_extract_tensor::<u8>().map_err(err)?;
            Tensor {
                shape: dims(s),
                data: TensorData::U8(v.to_vec()),
            }
        }
        DType::I64 => {
            let (s, v) = value.try_extract_tensor::<i64>().map_err(err)?;
            Tensor {
                shape: dims(s),
                data: TensorData::I64(v.to_vec()),
            }
        }
        DType::F32 => {
            let (s, v) = value.try_extract_tensor::<f32>().map_err(err)?;
            Tensor {
                shape: dims(s),
                data: TensorData::F32(v.to_vec()),
            }
        }
    })
}

impl Engine for OrtEngine {
    fn run(&mut self, inputs: Vec<(&str, Tensor)>, outputs: &[(&str, DType)]) -> Result<Vec<Tensor>, EngineError> {
        if self.pinned_ok || matches!(self.host, HostMemory::Plain(_)) {
            return self.run_bound(inputs, outputs);
        }
        // The first pinned run: if ONNX Runtime refuses pinned buffers, go on without them.
        let again = inputs.clone();
        match self.run_bound(inputs, outputs) {
            Ok(out) => {
                self.pinned_ok = true;
                Ok(out)
            }
            Err(e) => {
                warn(&format!(
                    "a run with pinned host buffers failed ({e}); retrying with ordinary host memory"
                ));
                self.host = plain_host().map_err(|e| EngineError::Run(e.to_string()))?;
                self.run_bound(again, outputs)
            }
        }
    }
}

/// A TensorRT optimization profile: the shapes of a graph's one input for which an engine
/// is built (`min` to `max`, tuned for `opt`), from the chunk geometry and `batch-size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrtProfile {
    pub input: String,
    pub min: Vec<usize>,
    pub opt: Vec<usize>,
    pub max: Vec<usize>,
}

impl TrtProfile {
    fn batches(input: &str, batch: usize, dims: &[usize]) -> Self {
        let with = |b: usize| std::iter::once(b).chain(dims.iter().copied()).collect::<Vec<_>>();
        let batch = batch.max(1);
        TrtProfile {
            input: input.to_string(),
            min: with(1),
            opt: with(batch),
            max: with(batch),
        }
    }

    /// encoder.onnx `frames` `[1..=batch, frames, height, width, 3]`.
    pub fn encoder(batch: usize, frames: usize, height: usize, width: usize) -> Self {
        Self::batches("frames", batch, &[frames, height, width, 3])
    }

    /// decoder.onnx `tokens` `[1..=batch, t, h, w]` (VQ).
    pub fn decoder_tokens(batch: usize, [t, h, w]: [usize; 3]) -> Self {
        Self::batches("tokens", batch, &[t, h, w])
    }

    /// decoder.onnx `latent` `[1..=batch, C, t, h, w]` (VAE).
    pub fn decoder_latent(batch: usize, channels: usize, [t, h, w]: [usize; 3]) -> Self {
        Self::batches("latent", batch, &[channels, t, h, w])
    }

    /// TensorRT's shape syntax: `input:d0xd1x...`.
    fn shape(&self, dims: &[usize]) -> String {
        let d: Vec<String> = dims.iter().map(|d| d.to_string()).collect();
        format!("{}:{}", self.input, d.join("x"))
    }

    /// (`trt_profile_min_shapes`, `trt_profile_opt_shapes`, `trt_profile_max_shapes`).
    pub fn option_values(&self) -> [String; 3] {
        [self.shape(&self.min), self.shape(&self.opt), self.shape(&self.max)]
    }
}

/// What a TensorRT session is about to build, for the log: it can take minutes.
pub fn tensorrt_note(path: &Path, settings: &SessionSettings) -> String {
    let profile = match &settings.trt_profile {
        Some(p) => {
            let [min, _, max] = p.option_values();
            format!("for shapes {min} to {max}")
        }
        None => "for the first input shape (no explicit profile: a new shape rebuilds)".to_string(),
    };
    let cache = match &settings.cache_dir {
        Some(d) => format!(
            "engine and timing caches in {} (a second start reuses them)",
            d.display()
        ),
        None => "no model-cache-dir: nothing is cached, every start builds again".to_string(),
    };
    format!(
        "building TensorRT engines for {} {profile}, {}{}; this can take minutes",
        path.display(),
        if settings.trt_fp16 { "fp16 allowed, " } else { "" },
        cache
    )
}

/// Why a session could not be built.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Runtime(#[from] super::LocateError),
    #[error("cannot create model-cache-dir {path}: {reason}")]
    CacheDir { path: String, reason: String },
    #[error("{0}")]
    Ort(String),
}

/// An ONNX Runtime session on `path` (or on `bytes`, the graph of `path` as rewritten in
/// memory) with the settings' threads, on `provider` (which fails rather than leaving nodes
/// to the CPU silently).
pub(crate) fn build_session(
    path: &Path,
    bytes: Option<&[u8]>,
    settings: &SessionSettings,
    provider: ExecutionProvider,
) -> Result<Session, SessionError> {
    let lib = super::init()?;
    fn err<T>(e: ort::Error<T>) -> SessionError {
        SessionError::Ort(e.to_string())
    }
    let mut b = Session::builder(&lib.environment).map_err(err)?;
    if settings.intra_op_threads > 0 {
        b = b.with_intra_threads(settings.intra_op_threads).map_err(err)?;
    }
    // Encoder and decoder sessions alternate on the same cores: do not spin while idle.
    b = b
        .with_inter_threads(1)
        .map_err(err)?
        .with_intra_op_spinning(false)
        .map_err(err)?;
    // Every ONNX Runtime fusion (LayerNorm, GELU, MatMul+scale, ...), whatever `ort` defaults to.
    b = b.with_optimization_level(GraphOptimizationLevel::All).map_err(err)?;
    match provider {
        ExecutionProvider::Remote => {
            return Err(SessionError::Ort(
                "execution-provider 'remote' is not a local provider: set inference-server instead".into(),
            ));
        }
        ExecutionProvider::Cpu => {}
        ExecutionProvider::Cuda => {
            let cuda = ep::CUDA::default()
                .with_device_id(settings.device_id)
                .with_tf32(settings.tf32)
                .build()
                .error_on_failure();
            // `error_on_failure` refuses a provider that cannot load. No
            // `session.disable_cpu_ep_fallback`: the CUDA provider leaves shape arithmetic
            // (Shape, the int64 Slice/Div/Concat feeding Reshape) to the CPU on purpose, and
            // that setting refuses any session with a node on the CPU, i.e. all our graphs.
            b = b.with_execution_providers([cuda]).map_err(err)?;
        }
        ExecutionProvider::TensorRt => {
            warn(&tensorrt_note(path, settings));
            let mut trt = ep::TensorRT::default()
                .with_device_id(settings.device_id)
                .with_fp16(settings.trt_fp16);
            if let Some(p) = &settings.trt_profile {
                let [min, opt, max] = p.option_values();
                trt = trt
                    .with_profile_min_shapes(min)
                    .with_profile_opt_shapes(opt)
                    .with_profile_max_shapes(max);
            }
            if let Some(dir) = &settings.cache_dir {
                std::fs::create_dir_all(dir).map_err(|e| SessionError::CacheDir {
                    path: dir.display().to_string(),
                    reason: e.to_string(),
                })?;
                let d = dir.display().to_string();
                trt = trt
                    .with_engine_cache(true)
                    .with_engine_cache_path(&d)
                    .with_timing_cache(true)
                    .with_timing_cache_path(&d);
            }
            let cuda = ep::CUDA::default()
                .with_device_id(settings.device_id)
                .with_tf32(settings.tf32)
                .build()
                .error_on_failure();
            b = b
                .with_execution_providers([trt.build().error_on_failure(), cuda])
                .map_err(err)?;
        }
    }
    match bytes {
        Some(bytes) => b.commit_from_memory(bytes).map_err(err),
        None => b.commit_from_file(path).map_err(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensorrt_profiles_span_batch_one_to_batch_size() {
        let p = TrtProfile::encoder(8, 17, 256, 256);
        assert_eq!(
            p.option_values(),
            [
                "frames:1x17x256x256x3".to_string(),
                "frames:8x17x256x256x3".to_string(),
                "frames:8x17x256x256x3".to_string()
            ]
        );
        let [min, opt, max] = TrtProfile::decoder_tokens(4, [5, 32, 32]).option_values();
        assert_eq!(
            (min.as_str(), opt.as_str(), max.as_str()),
            ("tokens:1x5x32x32", "tokens:4x5x32x32", "tokens:4x5x32x32")
        );
        let [min, _, max] = TrtProfile::decoder_latent(0, 8, [1, 16, 16]).option_values();
        assert_eq!(
            (min.as_str(), max.as_str()),
            ("latent:1x8x1x16x16", "latent:1x8x1x16x16"),
            "batch 0 counts as 1"
        );
    }

    #[test]
    fn tensorrt_note_says_what_is_built_and_where_it_is_cached() {
        let mut s = SessionSettings {
            trt_profile: Some(TrtProfile::encoder(8, 17, 256, 256)),
            trt_fp16: true,
            cache_dir: Some("/tmp/cache".into()),
            ..Default::default()
        };
        let n = tensorrt_note(Path::new("enc.onnx"), &s);
        assert!(n.contains("frames:1x17x256x256x3 to frames:8x17x256x256x3"), "{n}");
        assert!(
            n.contains("fp16 allowed") && n.contains("/tmp/cache") && n.contains("minutes"),
            "{n}"
        );
        s.cache_dir = None;
        s.trt_profile = None;
        let n = tensorrt_note(Path::new("enc.onnx"), &s);
        assert!(
            n.contains("a new shape rebuilds") && n.contains("nothing is cached"),
            "{n}"
        );
    }
}
