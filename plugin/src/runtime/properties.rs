//! The model and session properties omnitokenc and omnitokdec share (`model-file`,
//! `execution-provider`, `device-id`, `fallback`, `intra-op-threads`, `model-cache-dir`
//! and the read-only `active-execution-provider`), and the step that loads the graph
//! they name. The elements keep their own properties and their own error messages.

use std::path::PathBuf;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::{ExecutionProvider, LoadedModel, LocateError, Role, SessionSettings};

pub(crate) const DEFAULT_PROVIDER: ExecutionProvider = ExecutionProvider::Cpu;
const DEFAULT_DEVICE_ID: i32 = 0;
const DEFAULT_FALLBACK: bool = false;
const DEFAULT_INTRA_OP_THREADS: u32 = 0;
const MAX_INTRA_OP_THREADS: u32 = 1024;

/// The settings a session depends on (a change means another session).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ModelSettings {
    pub model_file: Option<PathBuf>,
    pub provider: ExecutionProvider,
    pub device_id: i32,
    pub fallback: bool,
    pub intra_op_threads: u32,
    pub model_cache_dir: Option<PathBuf>,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            model_file: None,
            provider: DEFAULT_PROVIDER,
            device_id: DEFAULT_DEVICE_ID,
            fallback: DEFAULT_FALLBACK,
            intra_op_threads: DEFAULT_INTRA_OP_THREADS,
            model_cache_dir: None,
        }
    }
}

/// Why [`ModelSettings::load`] failed; each element words its own message.
#[derive(Debug)]
pub(crate) enum LoadError {
    /// model-file is not set.
    NoModelFile,
    /// ONNX Runtime could not be found or initialised.
    Runtime(LocateError),
    /// model-file names no file.
    NotAFile(PathBuf),
    /// [`super::load`] refused the file (its error names the file in most cases).
    Load(PathBuf, anyhow::Error),
}

/// A path property: unset or empty means none.
fn path_value(value: &glib::Value) -> Option<PathBuf> {
    value
        .get::<Option<String>>()
        .unwrap()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}

fn path_to_value(path: &Option<PathBuf>) -> glib::Value {
    path.as_ref().map(|p| p.display().to_string()).to_value()
}

impl ModelSettings {
    /// The seven shared properties; `graph` ("encoder" or "decoder") names the graph in
    /// the blurbs. Writable ones can change in NULL and READY only.
    pub fn param_specs(graph: &str) -> Vec<glib::ParamSpec> {
        vec![
            glib::ParamSpecString::builder("model-file")
                .nick("Model file")
                .blurb(&format!(
                    "Path of the {graph} graph ({graph}.onnx written by omnitok-export); required"
                ))
                .mutable_ready()
                .build(),
            glib::ParamSpecEnum::builder_with_default("execution-provider", DEFAULT_PROVIDER)
                .nick("Execution provider")
                .blurb(&format!("Where ONNX Runtime runs the {graph}: cpu, cuda or tensorrt"))
                .mutable_ready()
                .build(),
            glib::ParamSpecInt::builder("device-id")
                .nick("Device ID")
                .blurb("GPU index for the cuda and tensorrt execution providers")
                .minimum(0)
                .maximum(i32::MAX)
                .default_value(DEFAULT_DEVICE_ID)
                .mutable_ready()
                .build(),
            glib::ParamSpecBoolean::builder("fallback")
                .nick("Fallback to CPU")
                .blurb(
                    "When the GPU execution provider cannot be used, run on CPU with a warning \
                     instead of failing with an error",
                )
                .default_value(DEFAULT_FALLBACK)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("intra-op-threads")
                .nick("Intra-op threads")
                .blurb("ONNX Runtime threads per operator (0 = ONNX Runtime's default: one per physical core)")
                .minimum(0)
                .maximum(MAX_INTRA_OP_THREADS)
                .default_value(DEFAULT_INTRA_OP_THREADS)
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("model-cache-dir")
                .nick("Model cache directory")
                .blurb(
                    "Directory for the TensorRT engine and timing caches (created if missing; \
                     unset: no caching, engines are rebuilt on every start)",
                )
                .mutable_ready()
                .build(),
            glib::ParamSpecEnum::builder_with_default("active-execution-provider", DEFAULT_PROVIDER)
                .nick("Active execution provider")
                .blurb(&format!(
                    "The execution provider the loaded {graph} really runs on (cpu after a \
                     fallback); valid from READY on"
                ))
                .read_only()
                .build(),
        ]
    }

    /// Sets one of the writable shared properties; false when `name` is not one of them
    /// (`active-execution-provider` is the element's to answer).
    pub fn set(&mut self, name: &str, value: &glib::Value) -> bool {
        match name {
            "model-file" => self.model_file = path_value(value),
            "execution-provider" => self.provider = value.get().unwrap(),
            "device-id" => self.device_id = value.get().unwrap(),
            "fallback" => self.fallback = value.get().unwrap(),
            "intra-op-threads" => self.intra_op_threads = value.get().unwrap(),
            "model-cache-dir" => self.model_cache_dir = path_value(value),
            _ => return false,
        }
        true
    }

    /// The value of one of the writable shared properties; None for any other name.
    pub fn get(&self, name: &str) -> Option<glib::Value> {
        Some(match name {
            "model-file" => path_to_value(&self.model_file),
            "execution-provider" => self.provider.to_value(),
            "device-id" => self.device_id.to_value(),
            "fallback" => self.fallback.to_value(),
            "intra-op-threads" => self.intra_op_threads.to_value(),
            "model-cache-dir" => path_to_value(&self.model_cache_dir),
            _ => return None,
        })
    }

    pub fn session_settings(&self) -> SessionSettings {
        SessionSettings {
            provider: self.provider,
            device_id: self.device_id,
            intra_op_threads: self.intra_op_threads as usize,
            cache_dir: self.model_cache_dir.clone(),
            fallback: self.fallback,
        }
    }

    /// Loads the `role` graph of model-file with these settings. A permitted CPU fallback
    /// is posted on the bus as a warning from `imp`; errors are left to the element.
    pub fn load<T: ElementImpl>(&self, imp: &T, role: Role) -> Result<LoadedModel, LoadError> {
        let path = self.model_file.clone().ok_or(LoadError::NoModelFile)?;
        super::init().map_err(LoadError::Runtime)?;
        if !path.is_file() {
            return Err(LoadError::NotAFile(path));
        }
        let model = super::load(&path, role, &self.session_settings()).map_err(|e| LoadError::Load(path, e))?;
        if let Some(why) = &model.fallback_reason {
            gst::element_imp_warning!(imp, gst::LibraryError::Settings, ("{}", why));
        }
        Ok(model)
    }
}
