//! ONNX Runtime: locating the library, sessions with explicit execution providers.

pub mod locate;

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use ort::session::Session;

pub use locate::{LocateError, OrtLibrary, init};

/// A CPU session on `path` with `threads` intra-op threads (0: ONNX Runtime's default).
pub fn cpu_session(path: &Path, threads: usize) -> Result<Session> {
    let lib = init()?;
    let err = |e: ort::Error<ort::session::builder::SessionBuilder>| anyhow!("{e}");
    let mut b = Session::builder(&lib.environment).map_err(|e| anyhow!("{e}"))?;
    if threads > 0 {
        b = b.with_intra_threads(threads).map_err(err)?;
    }
    b = b.with_inter_threads(1).map_err(err)?;
    b.commit_from_file(path)
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("cannot load model {}", path.display()))
}
