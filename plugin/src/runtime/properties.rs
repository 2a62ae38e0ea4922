//! The model and session properties omnitokenc and omnitokdec share (`model-file`,
//! `execution-provider`, `device-id`, `fallback`, `intra-op-threads`, `model-cache-dir`
//! and the read-only `active-execution-provider`), and the step that loads the graph
//! they name, with one wording and error domain for its failures ([`LoadError::message`]);
//! the `batch-size` property both batch with, and its one limit.

use std::path::PathBuf;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::model::ModelError;

static CAT: std::sync::LazyLock<gst::DebugCategory> = std::sync::LazyLock::new(|| {
    gst::DebugCategory::new(
        "omnitok-runtime",
        gst::DebugColorFlags::empty(),
        Some("omnitok model loading"),
    )
});
use super::{ExecutionProvider, LoadedModel, LocateError, Role, SessionSettings};

pub(crate) const DEFAULT_PROVIDER: ExecutionProvider = ExecutionProvider::Cpu;
const DEFAULT_DEVICE_ID: i32 = 0;
const DEFAULT_FALLBACK: bool = false;
const DEFAULT_INTRA_OP_THREADS: u32 = 0;
const MAX_INTRA_OP_THREADS: u32 = 1024;
pub(crate) const DEFAULT_BATCH_SIZE: u32 = 1;
/// Chunks per ONNX Runtime run, both elements.
pub(crate) const MAX_BATCH_SIZE: u32 = 64;

/// The `batch-size` property; `verb` ("encoded", "decoded") names the work in the blurb.
/// Changeable while playing (the elements post a Latency message when it changes).
pub(crate) fn batch_size_spec(verb: &str) -> glib::ParamSpec {
    glib::ParamSpecUInt::builder("batch-size")
        .nick("Batch size")
        .blurb(&format!(
            "Chunks {verb} per ONNX Runtime run (1-{MAX_BATCH_SIZE}): more gives better throughput \
             and adds (batch-size - 1) chunks of latency"
        ))
        .minimum(1)
        .maximum(MAX_BATCH_SIZE)
        .default_value(DEFAULT_BATCH_SIZE)
        .mutable_playing()
        .build()
}

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

/// Why [`ModelSettings::load`] failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum LoadError {
    /// model-file is not set.
    #[error("no model-file set: set model-file to the {0}.onnx written by omnitok-export")]
    NoModelFile(&'static str),
    /// ONNX Runtime could not be found or initialised.
    #[error(transparent)]
    Runtime(LocateError),
    /// model-file names no file.
    #[error("model-file {} does not exist", .0.display())]
    NotAFile(PathBuf),
    /// [`super::load`] refused the file.
    #[error("cannot use model-file {}: {}", .0.display(), .1)]
    Load(PathBuf, ModelError),
}

impl LoadError {
    /// The error message both elements post: settings problems are `LibraryError::Settings`,
    /// a missing file `ResourceError::NotFound`, no ONNX Runtime `LibraryError::Init`.
    pub fn message(&self) -> gst::ErrorMessage {
        let text = self.to_string();
        match self {
            LoadError::NoModelFile(_) | LoadError::Load(..) => {
                gst::error_msg!(gst::LibraryError::Settings, ("{}", text))
            }
            LoadError::NotAFile(_) => gst::error_msg!(gst::ResourceError::NotFound, ("{}", text)),
            LoadError::Runtime(_) => gst::error_msg!(gst::LibraryError::Init, ("{}", text)),
        }
    }
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
            ..Default::default()
        }
    }

    /// Loads the `role` graph of model-file with these settings. A permitted CPU fallback
    /// is posted on the bus as a warning from `imp`; errors are the caller's to post.
    pub fn load<T: ElementImpl>(&self, imp: &T, role: Role) -> Result<LoadedModel, LoadError> {
        let graph = match role {
            Role::Encoder => "encoder",
            Role::Decoder => "decoder",
        };
        let path = self.model_file.clone().ok_or(LoadError::NoModelFile(graph))?;
        super::init().map_err(LoadError::Runtime)?;
        if !path.is_file() {
            return Err(LoadError::NotAFile(path));
        }
        let model = super::load(&path, role, &self.session_settings()).map_err(|e| LoadError::Load(path, e))?;
        if let Some(why) = &model.fallback_reason {
            gst::element_imp_warning!(imp, gst::LibraryError::Settings, ("{}", why));
        }
        gst::info!(CAT, imp = imp, "loaded {}", model.info.describe());
        Ok(model)
    }
}
