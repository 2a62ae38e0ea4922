//! The engine seam: what runs a graph on named tensors. [`Engine`] is all the graph
//! contract ([`super::graph`]) needs; [`OrtEngine`] runs a local ONNX Runtime session (a
//! remote inference server is another implementation). No `ort` type crosses this module's
//! public surface except through [`super::cpu_session`], the tools' door.

use std::path::Path;

use ort::ep;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;

use super::model::{ExecutionProvider, SessionSettings};

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

/// A local ONNX Runtime session.
pub(crate) struct OrtEngine {
    session: Session,
}

impl OrtEngine {
    pub(crate) fn new(session: Session) -> Self {
        Self { session }
    }
}

fn ort_value(name: &str, t: Tensor) -> Result<ort::value::DynValue, EngineError> {
    let err = |e: ort::Error| EngineError::Input {
        name: name.to_string(),
        reason: e.to_string(),
    };
    let shape = t.shape;
    Ok(match t.data {
        TensorData::U8(v) => ort::value::Tensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::I64(v) => ort::value::Tensor::from_array((shape, v)).map_err(err)?.into_dyn(),
        TensorData::F32(v) => ort::value::Tensor::from_array((shape, v)).map_err(err)?.into_dyn(),
    })
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
        let values = inputs
            .into_iter()
            .map(|(name, t)| ort_value(name, t).map(|v| (name, v)))
            .collect::<Result<Vec<_>, _>>()?;
        let out = self.session.run(values).map_err(|e| EngineError::Run(e.to_string()))?;
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

/// An ONNX Runtime session on `path` with the settings' threads, on `provider` (which fails
/// rather than leaving nodes to the CPU silently).
pub(crate) fn build_session(
    path: &Path,
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
                .build()
                .error_on_failure();
            b = b.with_execution_providers([cuda]).map_err(err)?;
            // Refuse to place nodes on the CPU silently.
            b = b
                .with_config_entry("session.disable_cpu_ep_fallback", "1")
                .map_err(err)?;
        }
        ExecutionProvider::TensorRt => {
            let mut trt = ep::TensorRT::default().with_device_id(settings.device_id);
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
                .build()
                .error_on_failure();
            b = b
                .with_execution_providers([trt.build().error_on_failure(), cuda])
                .map_err(err)?;
        }
    }
    b.commit_from_file(path).map_err(err)
}
