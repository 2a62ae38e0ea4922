//! ONNX Runtime: locating the library, sessions with explicit execution providers, and
//! what a graph is (from its metadata).

pub mod locate;
pub mod model;
pub(crate) mod properties;

use std::path::Path;

use anyhow::Result;
use ort::session::Session;

pub use locate::{LocateError, OrtLibrary, init};
pub use model::{ExecutionProvider, Kind, LoadedModel, ModelInfo, Role, SessionSettings, load};

/// A CPU session on `path` with `threads` intra-op threads (0: ONNX Runtime's default),
/// for tests and tools that run graphs directly.
pub fn cpu_session(path: &Path, threads: usize) -> Result<Session> {
    let settings = SessionSettings {
        intra_op_threads: threads,
        ..Default::default()
    };
    model::build_session(path, &settings, ExecutionProvider::Cpu)
}
