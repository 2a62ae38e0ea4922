//! The model and session properties omnitokenc and omnitokdec share (`model-file`,
//! `execution-provider`, `device-id`, `fallback`, `intra-op-threads`, `model-cache-dir`
//! and the read-only `active-execution-provider`; `inference-server`, `inference-model`,
//! `inference-timeout` and `inference-retries` for a remote server), and the step that loads the graph
//! they name, with one wording and error domain for its failures ([`LoadError::message`]);
//! the `batch-size` property both batch with, and its one limit.

use std::path::PathBuf;
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use super::model::ModelError;
use super::remote::{Interrupt, RemoteError, RemoteSettings};

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
const DEFAULT_INFERENCE_TIMEOUT_MS: u32 = 60_000;
const MAX_INFERENCE_RETRIES: u32 = 100;
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
    /// `inference-server`: run the graph on this server instead of locally.
    pub inference_server: Option<String>,
    pub inference_model: Option<String>,
    pub inference_timeout_ms: u32,
    pub inference_retries: u32,
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
            inference_server: None,
            inference_model: None,
            inference_timeout_ms: DEFAULT_INFERENCE_TIMEOUT_MS,
            inference_retries: 0,
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
    /// inference-server is set but inference-model is not.
    #[error(
        "inference-server is set but inference-model is not: set it to the {0} model's name on the server (e.g. NAME_{0})"
    )]
    NoInferenceModel(&'static str),
    /// The remote model cannot be used.
    #[error(transparent)]
    Remote(RemoteError),
}

impl LoadError {
    /// The error message both elements post: settings problems are `LibraryError::Settings`,
    /// a missing file `ResourceError::NotFound`, no ONNX Runtime `LibraryError::Init`.
    pub fn message(&self) -> gst::ErrorMessage {
        let text = self.to_string();
        match self {
            LoadError::NoModelFile(_)
            | LoadError::Load(..)
            | LoadError::NoInferenceModel(_)
            | LoadError::Remote(RemoteError::Url(_) | RemoteError::Metadata { .. } | RemoteError::WrongRole { .. }) => {
                gst::error_msg!(gst::LibraryError::Settings, ("{}", text))
            }
            LoadError::NotAFile(_) | LoadError::Remote(RemoteError::ModelMissing { .. }) => {
                gst::error_msg!(gst::ResourceError::NotFound, ("{}", text))
            }
            LoadError::Remote(_) => gst::error_msg!(gst::ResourceError::OpenRead, ("{}", text)),
            LoadError::Runtime(_) => gst::error_msg!(gst::LibraryError::Init, ("{}", text)),
        }
    }
}

/// A string property: unset or empty means none.
fn string_value(value: &glib::Value) -> Option<String> {
    value.get::<Option<String>>().unwrap().filter(|s| !s.is_empty())
}

/// A path property: unset or empty means none.
fn path_value(value: &glib::Value) -> Option<PathBuf> {
    string_value(value).map(PathBuf::from)
}

fn path_to_value(path: &Option<PathBuf>) -> glib::Value {
    path.as_ref().map(|p| p.display().to_string()).to_value()
}

impl ModelSettings {
    /// The eleven shared properties; `graph` ("encoder" or "decoder") names the graph in
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
            glib::ParamSpecString::builder("inference-server")
                .nick("Inference server")
                .blurb(&format!(
                    "Run the {graph} on this KServe v2 / Triton Inference Server (http://HOST:PORT) \
                     instead of locally; model-file and the local session properties are then not used"
                ))
                .mutable_ready()
                .build(),
            glib::ParamSpecString::builder("inference-model")
                .nick("Inference model")
                .blurb(&format!(
                    "The {graph} model's name on inference-server (NAME_{graph} in a repository \
                     written by omnitok-export --triton-repository)"
                ))
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("inference-timeout")
                .nick("Inference timeout")
                .blurb("Milliseconds one request to inference-server may take (connect, send, answer)")
                .minimum(1)
                .default_value(DEFAULT_INFERENCE_TIMEOUT_MS)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt::builder("inference-retries")
                .nick("Inference retries")
                .blurb(
                    "Retries of a request that failed for a connection, timeout or server-side \
                     (5xx) reason, each with a warning and a back-off of 0.25 s doubling to 4 s; \
                     0 = the first failure is an error",
                )
                .maximum(MAX_INFERENCE_RETRIES)
                .default_value(0)
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
            "inference-server" => self.inference_server = string_value(value),
            "inference-model" => self.inference_model = string_value(value),
            "inference-timeout" => self.inference_timeout_ms = value.get().unwrap(),
            "inference-retries" => self.inference_retries = value.get().unwrap(),
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
            "inference-server" => self.inference_server.to_value(),
            "inference-model" => self.inference_model.to_value(),
            "inference-timeout" => self.inference_timeout_ms.to_value(),
            "inference-retries" => self.inference_retries.to_value(),
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
    pub fn load<T: ElementImpl>(&self, imp: &T, role: Role, interrupt: &Interrupt) -> Result<LoadedModel, LoadError> {
        let graph = match role {
            Role::Encoder => "encoder",
            Role::Decoder => "decoder",
        };
        if let Some(server) = &self.inference_server {
            return self.load_remote(imp, role, graph, server, interrupt);
        }
        let path = self.model_file.clone().ok_or(LoadError::NoModelFile(graph))?;
        super::init().map_err(LoadError::Runtime)?;
        if !path.is_file() {
            return Err(LoadError::NotAFile(path));
        }
        let model = super::load(&path, role, &self.session_settings()).map_err(|e| LoadError::Load(path, e))?;
        if let Some(why) = &model.fallback_reason {
            gst::element_imp_warning!(imp, gst::LibraryError::Settings, ("{}", why));
        }
        if let Some(r) = &model.int8_rewrite {
            gst::warning!(
                CAT,
                imp = imp,
                "this CPU has no VNNI: the full-range int8 weights of {} integer MatMuls are stored as uint8 (zero point 128) for ONNX Runtime's exact, slower uint8 x uint8 kernels; a graph exported with --int8-pair-max 128 runs on the faster uint8 x int8 kernels here",
                r.matmuls
            );
        }
        gst::info!(CAT, imp = imp, "loaded {}", model.info.describe());
        Ok(model)
    }

    /// The graph on `server` (`inference-server`): retries are posted as warnings from
    /// `imp`'s element, at load and for every request.
    fn load_remote<T: ElementImpl>(
        &self,
        imp: &T,
        role: Role,
        graph: &'static str,
        server: &str,
        interrupt: &Interrupt,
    ) -> Result<LoadedModel, LoadError> {
        let model = self.inference_model.clone().ok_or(LoadError::NoInferenceModel(graph))?;
        let settings = RemoteSettings {
            server: server.to_string(),
            model,
            timeout: Duration::from_millis(self.inference_timeout_ms.into()),
            retries: self.inference_retries,
        };
        let element = imp.obj().upcast_ref::<gst::Element>().downgrade();
        let warn = Box::new(move |what: &str| {
            if let Some(e) = element.upgrade() {
                gst::element_warning!(e, gst::ResourceError::Read, ("{}", what));
            }
        });
        let model = super::remote::load(&settings, role, warn, interrupt.clone()).map_err(LoadError::Remote)?;
        gst::info!(CAT, imp = imp, "remote {}", model.info.describe());
        Ok(model)
    }
}
