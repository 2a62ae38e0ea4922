//! Running graphs: locating ONNX Runtime, loading a graph with explicit execution
//! providers, what a graph is (from its metadata), the graph I/O contract ([`graph`]) over
//! the engine seam ([`engine`]: local ONNX Runtime, or a remote inference server, [`remote`]), and how the elements hold a loaded graph ([`slot`]).
//! `ort` types stay inside this module (apart from [`cpu_session`], for tools).

pub mod engine;
pub mod graph;
pub mod locate;
pub mod model;
pub(crate) mod properties;
pub mod remote;
pub mod sampling;
pub(crate) mod slot;
pub mod unsigned_weights;

use std::path::Path;

pub use engine::{DType, Engine, EngineError, Tensor, TensorData};
pub use graph::{ChunkShape, DecoderGraph, EncoderGraph, Frames, GraphError, Sampling};
pub use locate::{LocateError, OrtLibrary, init};
pub use model::{
    ChunkFramesError, ExecutionProvider, HeaderError, Int8Kernels, Kind, LoadedModel, ModelError, ModelInfo, Role,
    SessionSettings, StreamMismatch, full_range_int8_is_exact, load, load_for,
};

/// A CPU ONNX Runtime session on `path` with `threads` intra-op threads (0: ONNX Runtime's
/// default), built as the elements build theirs (full-range int8 weights stored as uint8 on
/// CPUs without VNNI, [`Int8Kernels`]), for tests and tools that run graphs directly.
pub fn cpu_session(path: &Path, threads: usize) -> Result<ort::session::Session, ModelError> {
    cpu_session_for(path, threads, Int8Kernels::here())
}

/// [`cpu_session`] as on a CPU with these integer kernels.
pub fn cpu_session_for(path: &Path, threads: usize, kernels: Int8Kernels) -> Result<ort::session::Session, ModelError> {
    let settings = SessionSettings {
        intra_op_threads: threads,
        ..Default::default()
    };
    let rewritten = model::unsigned_copy(path, kernels)?;
    let bytes = rewritten.as_ref().map(|(b, _)| b.as_slice());
    engine::build_session(path, bytes, &settings, ExecutionProvider::Cpu).map_err(ModelError::Session)
}
