//! `omnitok-export`: reads released OmniTokenizer checkpoints (Lightning `.ckpt` or
//! safetensors) without Python and traces the model into ONNX graphs.

pub mod checkpoint;
pub mod config;
pub mod export;
pub mod graph;
pub mod half;
pub mod model;
pub mod onnx;
pub mod quantize;
pub mod triton;
pub mod weights;

// The unit tests share the integration tests' support code (which names this crate).
#[cfg(test)]
extern crate self as omnitok_export;
#[cfg(test)]
#[path = "../tests/support/mod.rs"]
mod test_support;

pub use config::{AttentionSemantics, Config, PRESETS, preset};
pub use export::{ExportOptions, Exported, Provenance, build, write, write_random_preset};
pub use weights::{Source, Weights};
