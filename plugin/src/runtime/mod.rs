//! ONNX Runtime: locating the library, sessions with explicit execution providers.

pub mod locate;

pub use locate::{LocateError, OrtLibrary, init};
