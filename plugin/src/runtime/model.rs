//! A loaded graph: the ONNX Runtime session, the execution provider it really runs on,
//! and [`ModelInfo`], read from the metadata `omnitok-export` writes.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use gst::glib;
use ort::ep;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use serde::Deserialize;

use super::init;

/// The `omnitok.contract` this plugin reads (docs/GRAPHS.md).
pub const GRAPH_CONTRACT: &str = "2";

/// Where a session runs (the `execution-provider` property).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, glib::Enum, Default)]
#[repr(u32)]
#[enum_type(name = "GstOmnitokExecutionProvider")]
pub enum ExecutionProvider {
    #[default]
    #[enum_value(name = "CPU", nick = "cpu")]
    Cpu = 0,
    #[enum_value(name = "CUDA (NVIDIA GPU)", nick = "cuda")]
    Cuda = 1,
    #[enum_value(name = "TensorRT (NVIDIA GPU, engines cached in model-cache-dir)", nick = "tensorrt")]
    TensorRt = 2,
}

impl ExecutionProvider {
    pub fn nick(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::TensorRt => "tensorrt",
        }
    }
}

/// Session settings, from the elements' properties.
#[derive(Debug, Clone, Default)]
pub struct SessionSettings {
    pub provider: ExecutionProvider,
    pub device_id: i32,
    /// 0: ONNX Runtime's default (one per physical core).
    pub intra_op_threads: usize,
    /// TensorRT engine and timing caches.
    pub cache_dir: Option<PathBuf>,
    /// Run on CPU (with a warning) when the GPU provider cannot load.
    pub fallback: bool,
}

/// Which graph a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Encoder,
    Decoder,
}

/// VQ tokens or VAE latents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Vq,
    Vae,
}

/// The geometry rules of a graph (`omnitok.geometry`, written by the exporter; docs/GRAPHS.md).
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct Geometry {
    /// Frame width and height must be multiples of this.
    pub size_multiple: u32,
    /// Spatial patch: one token per `patch x patch` pixels.
    pub patch: u32,
    /// Frames per temporal token after the first frame.
    pub temporal_patch: u32,
    /// The clip length the model was trained on: 1 + k * temporal_patch.
    pub clip_frames: u32,
    /// Latent channels (VAE) / codebook dim.
    pub channels: u32,
    pub codebook_size: u32,
}

/// What a graph is, from its `omnitok.*` metadata.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    pub path: PathBuf,
    pub role: Role,
    pub kind: Kind,
    pub geometry: Geometry,
    pub config_json: String,
    pub model_id: [u8; 32],
    pub attention: String,
    pub source: String,
}

impl ModelInfo {
    /// Frame width and height must be multiples of this.
    pub fn size_multiple(&self) -> u32 {
        self.geometry.size_multiple
    }

    /// The smallest valid size >= `n`.
    pub fn padded(&self, n: u32) -> u32 {
        n.div_ceil(self.size_multiple()) * self.size_multiple()
    }

    pub fn temporal_patch(&self) -> u32 {
        self.geometry.temporal_patch
    }

    /// The clip length the model was trained on: 1 + k * temporal_patch <= sequence_length.
    pub fn clip_frames(&self) -> u32 {
        self.geometry.clip_frames
    }

    pub fn valid_frames(&self, frames: u32) -> bool {
        frames >= 1 && (frames - 1).is_multiple_of(self.temporal_patch())
    }

    /// Token/latent grid `(t, h, w)` of a chunk of `frames` frames at a padded size.
    pub fn grid(&self, frames: u32, padded_width: u32, padded_height: u32) -> [u32; 3] {
        let p = self.geometry.patch;
        [
            1 + (frames - 1) / self.temporal_patch(),
            padded_height / p,
            padded_width / p,
        ]
    }

    /// Latent channels (VAE) / codebook dim.
    pub fn channels(&self) -> u32 {
        self.geometry.channels
    }

    pub fn codebook_size(&self) -> u32 {
        self.geometry.codebook_size
    }

    /// A short name for stream headers: the file stem of the source.
    pub fn short_name(&self) -> String {
        let kind = match self.kind {
            Kind::Vq => "vq",
            Kind::Vae => "vae",
        };
        let mut s = format!("omnitok-{kind} {}", self.source);
        s.truncate(200);
        s
    }

    fn from_session(path: &Path, session: &Session) -> Result<Self> {
        let meta = session.metadata().map_err(|e| anyhow!("{e}"))?;
        let get = |k: &str| -> Result<String> {
            meta.custom(k).with_context(|| {
                format!(
                    "{} has no '{k}' metadata: not a graph written by omnitok-export",
                    path.display()
                )
            })
        };
        let role = match get("omnitok.role")?.as_str() {
            "encoder" => Role::Encoder,
            "decoder" => Role::Decoder,
            other => bail!("{}: unknown omnitok.role '{other}'", path.display()),
        };
        let kind = match get("omnitok.kind")?.as_str() {
            "vq" => Kind::Vq,
            "vae" => Kind::Vae,
            other => bail!("{}: unknown omnitok.kind '{other}'", path.display()),
        };
        let contract = get("omnitok.contract")?;
        if contract != GRAPH_CONTRACT {
            bail!(
                "{} follows graph contract {contract}, this plugin reads contract {GRAPH_CONTRACT}: export it again with this version's omnitok-export",
                path.display()
            );
        }
        let config_json = get("omnitok.config")?;
        let geometry: Geometry = serde_json::from_str(&get("omnitok.geometry")?)
            .with_context(|| format!("{}: invalid omnitok.geometry", path.display()))?;
        if geometry.size_multiple == 0
            || geometry.patch == 0
            || geometry.temporal_patch == 0
            || geometry.clip_frames == 0
        {
            bail!("{}: omnitok.geometry has a zero size: {geometry:?}", path.display());
        }
        let id_hex = get("omnitok.model_id")?;
        let model_id = crate::format::model_id_from_hex(&id_hex).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        Ok(ModelInfo {
            path: path.to_path_buf(),
            role,
            kind,
            geometry,
            config_json,
            model_id,
            attention: get("omnitok.attention")?,
            source: meta.custom("omnitok.source").unwrap_or_default(),
        })
    }
}

/// A session ready to run, and what it is.
pub struct LoadedModel {
    pub session: Session,
    pub info: ModelInfo,
    /// The provider the session runs on (CPU after a permitted fallback).
    pub active_provider: ExecutionProvider,
    /// Set when a GPU provider failed and `fallback` let the session run on CPU.
    pub fallback_reason: Option<String>,
}

pub(crate) fn build_session(path: &Path, settings: &SessionSettings, provider: ExecutionProvider) -> Result<Session> {
    let lib = init()?;
    let err = |e: ort::Error<ort::session::builder::SessionBuilder>| anyhow!("{e}");
    let mut b = Session::builder(&lib.environment).map_err(|e| anyhow!("{e}"))?;
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
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create model-cache-dir {}", dir.display()))?;
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
    b.commit_from_file(path).map_err(|e| anyhow!("{e}"))
}

/// Loads `path` as the graph of `role` on the configured provider.
pub fn load(path: &Path, role: Role, settings: &SessionSettings) -> Result<LoadedModel> {
    if !path.is_file() {
        bail!("model file {} does not exist", path.display());
    }
    let (session, active_provider, fallback_reason) = match build_session(path, settings, settings.provider) {
        Ok(s) => (s, settings.provider, None),
        Err(e) if settings.provider != ExecutionProvider::Cpu && settings.fallback => {
            let why = format!(
                "execution provider '{}' is not usable ({e:#}); running on CPU",
                settings.provider.nick()
            );
            (
                build_session(path, settings, ExecutionProvider::Cpu)?,
                ExecutionProvider::Cpu,
                Some(why),
            )
        }
        Err(e) if settings.provider != ExecutionProvider::Cpu => {
            bail!(
                "execution provider '{}' is not usable for {}: {e:#} (set fallback=true to run on CPU instead)",
                settings.provider.nick(),
                path.display()
            )
        }
        Err(e) => return Err(e.context(format!("cannot load model {}", path.display()))),
    };
    let info = ModelInfo::from_session(path, &session)?;
    if info.role != role {
        let (want, got) = match role {
            Role::Encoder => ("an encoder", "a decoder"),
            Role::Decoder => ("a decoder", "an encoder"),
        };
        bail!(
            "{} is {got} graph, but this element needs {want} graph (encoder.onnx / decoder.onnx)",
            path.display()
        );
    }
    Ok(LoadedModel {
        session,
        info,
        active_provider,
        fallback_reason,
    })
}
