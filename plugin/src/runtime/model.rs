//! A loaded graph: its engine, the execution provider it really runs on, and
//! [`ModelInfo`], read from the metadata `omnitok-export` writes. What a stream needs from
//! a model is decided here too: the header an encoder writes ([`ModelInfo::stream_header`])
//! and whether a decoder can read a header ([`ModelInfo::check_stream`]).

use std::path::{Path, PathBuf};

use gst::glib;
use ort::session::Session;
use serde::Deserialize;

use super::engine::{self, Engine, OrtEngine, SessionError};
use super::unsigned_weights::{self, Rewritten};
use crate::format::{FormatError, PayloadType, StreamHeader, model_id_to_hex};

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
    /// Chosen by setting `inference-server`; what `active-execution-provider` reports then.
    #[enum_value(name = "A remote inference server (set by inference-server)", nick = "remote")]
    Remote = 3,
}

impl ExecutionProvider {
    pub fn nick(self) -> &'static str {
        match self {
            Self::Cpu => "cpu",
            Self::Cuda => "cuda",
            Self::TensorRt => "tensorrt",
            Self::Remote => "remote",
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
    /// CUDA and TensorRT: TF32 tensor cores for float32 MatMul and Conv (CUDA's `use_tf32`).
    /// Off: float32 graphs compute in float32, as on CPU.
    pub tf32: bool,
    /// TensorRT: allow half-precision kernels (`trt_fp16_enable`); set for f16 graphs.
    pub trt_fp16: bool,
    /// TensorRT: an explicit optimization profile, so that the engine is built once at session
    /// creation for every shape in it (none: TensorRT builds for the first shape it sees and
    /// rebuilds on a new one).
    pub trt_profile: Option<super::engine::TrtProfile>,
}

/// Which graph a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Encoder,
    Decoder,
}

impl Role {
    /// "an encoder" / "a decoder".
    fn article(self) -> &'static str {
        match self {
            Role::Encoder => "an encoder",
            Role::Decoder => "a decoder",
        }
    }
}

/// VQ tokens or VAE latents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Vq,
    Vae,
}

/// The geometry rules of a graph (`omnitok.geometry`, written by the exporter; docs/GRAPHS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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
    /// `omnitok.precision`: `f32` (also when absent), `int8` or `f16`.
    pub precision: String,
    /// `omnitok.int8_policy` (JSON) of an int8 graph.
    pub int8_policy: Option<String>,
    /// `omnitok.int8_cpu` of an int8 graph: `any`, or `x86-vnni` for full-range weights.
    pub int8_cpu: Option<String>,
}

impl ModelInfo {
    /// One line for the log: role, kind, precision (with the int8 policy), source.
    pub fn describe(&self) -> String {
        let role = match self.role {
            Role::Encoder => "encoder",
            Role::Decoder => "decoder",
        };
        let policy = self
            .int8_policy
            .as_deref()
            .map(|p| format!(" (policy {p})"))
            .unwrap_or_default();
        format!(
            "{} {role} {}, precision {}{policy}, {} attention, {}",
            self.kind_name(),
            self.path.display(),
            self.precision,
            self.attention,
            self.source
        )
    }

    /// Frame width and height must be multiples of this.
    pub fn size_multiple(&self) -> u32 {
        self.geometry.size_multiple
    }

    /// The smallest valid size >= `n` (None when it does not fit a u32).
    pub fn padded(&self, n: u32) -> Option<u32> {
        n.div_ceil(self.size_multiple()).checked_mul(self.size_multiple())
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
        // The informative model name says which encoder precision produced the tokens.
        let precision = if self.precision == "f32" {
            String::new()
        } else {
            format!(" {}", self.precision)
        };
        let mut s = format!("omnitok-{kind} {}{precision}", self.source);
        s.truncate(200);
        s
    }

    fn kind_name(&self) -> &'static str {
        match self.kind {
            Kind::Vq => "VQ",
            Kind::Vae => "VAE",
        }
    }

    /// The chunk length an encoder runs at: `requested`, or the model's clip length for 0.
    pub fn chunk_frames(&self, requested: u32) -> Result<u32, ChunkFramesError> {
        let chunk_frames = match requested {
            0 => self.clip_frames(),
            n => n,
        };
        if self.valid_frames(chunk_frames) {
            Ok(chunk_frames)
        } else {
            Err(ChunkFramesError {
                chunk_frames,
                temporal_patch: self.temporal_patch(),
                clip_frames: self.clip_frames(),
            })
        }
    }

    /// The stream header an encoder writes for `width x height` video at `fps_n/fps_d`
    /// (an unknown or invalid rate becomes 0/1) in chunks of `chunk_frames` (valid for
    /// this model, [`Self::chunk_frames`]); VAE latents are stored as `latent_payload`.
    /// Returns the header and its bytes.
    pub fn stream_header(
        &self,
        width: u32,
        height: u32,
        (fps_n, fps_d): (i32, i32),
        chunk_frames: u32,
        latent_payload: PayloadType,
    ) -> Result<(StreamHeader, Vec<u8>), HeaderError> {
        let (pw, ph) = match (self.padded(width), self.padded(height)) {
            (Some(pw), Some(ph)) => (pw, ph),
            _ => return Err(HeaderError::TooLarge { width, height }),
        };
        let (fps_n, fps_d) = match (u32::try_from(fps_n), u32::try_from(fps_d)) {
            (Ok(n), Ok(d)) if n > 0 && d > 0 => (n, d),
            _ => (0, 1),
        };
        let (channels, codebook_size, payload_type) = match self.kind {
            Kind::Vq => (0, self.codebook_size(), PayloadType::for_codebook(self.codebook_size())),
            Kind::Vae => (self.channels(), 0, latent_payload),
        };
        let header = StreamHeader {
            model_id: self.model_id,
            width,
            height,
            padded_width: pw,
            padded_height: ph,
            fps_n,
            fps_d,
            chunk_frames,
            grid: self.grid(chunk_frames, pw, ph),
            channels,
            codebook_size,
            payload_type,
            model_name: self.short_name(),
            // Variable rate: every record carries its frames' PTS (format version 2).
            frame_pts: fps_n == 0,
            token_coding: crate::format::TokenCoding::Plain,
        };
        let bytes = header.try_encode().map_err(|source| HeaderError::Format {
            width,
            height,
            padded_width: pw,
            padded_height: ph,
            source,
        })?;
        Ok((header, bytes))
    }

    /// Does `header` fit this decoder graph? (docs/FORMAT.md, section 8.)
    pub fn check_stream(&self, header: &StreamHeader) -> Result<(), StreamMismatch> {
        use StreamMismatch as E;
        if header.model_id != self.model_id {
            return Err(E::ModelId {
                stream: header.model_id,
                stream_name: header.model_name.clone(),
                path: self.path.clone(),
                model: self.model_id,
            });
        }
        match (self.kind, header.payload_type.is_tokens()) {
            (Kind::Vq, false) | (Kind::Vae, true) => {
                return Err(E::Kind {
                    payload: header.payload_type,
                    path: self.path.clone(),
                    kind: self.kind,
                });
            }
            _ => {}
        }
        let kind = self.kind_name();
        if self.kind == Kind::Vq {
            if header.codebook_size != self.codebook_size() {
                return Err(E::CodebookSize {
                    stream: header.codebook_size,
                    kind,
                    model: self.codebook_size(),
                });
            }
            if header.payload_type != PayloadType::for_codebook(header.codebook_size) {
                return Err(E::PayloadType {
                    payload: header.payload_type,
                    codebook_size: header.codebook_size,
                });
            }
        } else if header.channels != self.channels() {
            return Err(E::Channels {
                stream: header.channels,
                kind,
                model: self.channels(),
            });
        }
        let m = self.size_multiple();
        if !header.padded_width.is_multiple_of(m) || !header.padded_height.is_multiple_of(m) {
            return Err(E::PaddedSize {
                width: header.padded_width,
                height: header.padded_height,
                multiple: m,
            });
        }
        if !self.valid_frames(header.chunk_frames) {
            return Err(E::ChunkFrames {
                chunk_frames: header.chunk_frames,
                temporal_patch: self.temporal_patch(),
            });
        }
        let grid = self.grid(header.chunk_frames, header.padded_width, header.padded_height);
        if header.grid != grid {
            return Err(E::Grid {
                stream: header.grid,
                model: grid,
                chunk_frames: header.chunk_frames,
                width: header.padded_width,
                height: header.padded_height,
            });
        }
        Ok(())
    }

    fn from_session(session: &Session) -> Result<Self, ModelError> {
        let meta = session.metadata().map_err(|e| ModelError::Metadata(e.to_string()))?;
        Self::from_metadata(&|k| meta.custom(k))
    }

    /// From the `omnitok.*` entries, wherever they are kept (the ONNX metadata, or the
    /// `parameters` of a Triton model config); `path` is left empty.
    pub(crate) fn from_metadata(custom: &dyn Fn(&str) -> Option<String>) -> Result<Self, ModelError> {
        let get = |k: &'static str| -> Result<String, ModelError> { custom(k).ok_or(ModelError::MissingMetadata(k)) };
        let unknown = |key: &'static str, value: String| ModelError::UnknownValue { key, value };
        let role = match get("omnitok.role")?.as_str() {
            "encoder" => Role::Encoder,
            "decoder" => Role::Decoder,
            other => return Err(unknown("omnitok.role", other.into())),
        };
        let kind = match get("omnitok.kind")?.as_str() {
            "vq" => Kind::Vq,
            "vae" => Kind::Vae,
            other => return Err(unknown("omnitok.kind", other.into())),
        };
        let contract = get("omnitok.contract")?;
        if contract != GRAPH_CONTRACT {
            return Err(ModelError::Contract(contract));
        }
        let config_json = get("omnitok.config")?;
        let geometry: Geometry =
            serde_json::from_str(&get("omnitok.geometry")?).map_err(|e| ModelError::Geometry(e.to_string()))?;
        if geometry.size_multiple == 0
            || geometry.patch == 0
            || geometry.temporal_patch == 0
            || geometry.clip_frames == 0
        {
            return Err(ModelError::Geometry(format!("a zero size: {geometry:?}")));
        }
        let model_id = crate::format::model_id_from_hex(&get("omnitok.model_id")?)
            .map_err(|e| ModelError::ModelId(e.to_string()))?;
        Ok(ModelInfo {
            path: PathBuf::new(),
            role,
            kind,
            geometry,
            config_json,
            model_id,
            attention: get("omnitok.attention")?,
            source: custom("omnitok.source").unwrap_or_default(),
            precision: custom("omnitok.precision").unwrap_or_else(|| "f32".into()),
            int8_policy: custom("omnitok.int8_policy"),
            int8_cpu: custom("omnitok.int8_cpu"),
        })
    }
}

/// chunk-frames is not 1 + k x the model's temporal patch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid chunk-frames {chunk_frames}: it must be 1 + k x {temporal_patch} (the model's temporal patch), e.g. 1, {}, {} (0 = the model's clip length {clip_frames})",
    1 + temporal_patch, 1 + 2 * temporal_patch
)]
pub struct ChunkFramesError {
    pub chunk_frames: u32,
    pub temporal_patch: u32,
    pub clip_frames: u32,
}

/// Why no stream header can describe a video.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HeaderError {
    #[error("{width}x{height} video cannot be padded to the model's size multiple")]
    TooLarge { width: u32, height: u32 },
    #[error("cannot encode {width}x{height} video ({padded_width}x{padded_height} padded): {source}")]
    Format {
        width: u32,
        height: u32,
        padded_width: u32,
        padded_height: u32,
        source: FormatError,
    },
}

/// Why a decoder graph cannot decode a stream.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StreamMismatch {
    #[error(
        "model identity mismatch: the stream was made by model {} ({}), but {} is model {}; tokens of one model cannot be decoded by another",
        model_id_to_hex(stream),
        if stream_name.is_empty() { "name not in caps".to_string() } else { format!("'{stream_name}'") },
        path.display(),
        model_id_to_hex(model)
    )]
    ModelId {
        stream: [u8; 32],
        stream_name: String,
        path: PathBuf,
        model: [u8; 32],
    },
    #[error(
        "the stream carries {payload} {} but {} is {}",
        if payload.is_tokens() { "tokens" } else { "latents" },
        path.display(),
        match kind { Kind::Vq => "a VQ (token) decoder", Kind::Vae => "a VAE (latent) decoder" }
    )]
    Kind {
        payload: PayloadType,
        path: PathBuf,
        kind: Kind,
    },
    #[error("codebook size {stream} of the stream does not match the {kind} model's {model}")]
    CodebookSize {
        stream: u32,
        kind: &'static str,
        model: u32,
    },
    #[error("payload type {payload} does not fit codebook size {codebook_size}")]
    PayloadType { payload: PayloadType, codebook_size: u32 },
    #[error("latent channels {stream} of the stream do not match the {kind} model's {model}")]
    Channels {
        stream: u32,
        kind: &'static str,
        model: u32,
    },
    #[error("padded size {width}x{height} is not a multiple of the model's {multiple}")]
    PaddedSize { width: u32, height: u32, multiple: u32 },
    #[error("chunk-frames {chunk_frames} is not 1 + k * {temporal_patch} (the model's temporal patch)")]
    ChunkFrames { chunk_frames: u32, temporal_patch: u32 },
    #[error(
        "grid {stream:?} of the stream does not match the model's grid {model:?} for {chunk_frames} frames at {width}x{height}"
    )]
    Grid {
        stream: [u32; 3],
        model: [u32; 3],
        chunk_frames: u32,
        width: u32,
        height: u32,
    },
}

/// Why a file cannot be used as a graph (the path is the caller's to add).
#[derive(Debug, Clone, thiserror::Error)]
pub enum ModelError {
    #[error("model file {} does not exist", .0.display())]
    NotAFile(PathBuf),
    #[error("execution provider '{}' is not usable: {reason} (set fallback=true to run on CPU instead)", provider.nick())]
    Provider {
        provider: ExecutionProvider,
        reason: SessionError,
    },
    #[error("ONNX Runtime cannot load it: {0}")]
    Session(SessionError),
    #[error("ONNX Runtime cannot read its metadata: {0}")]
    Metadata(String),
    #[error("it has no '{0}' metadata: not a graph written by omnitok-export")]
    MissingMetadata(&'static str),
    #[error("unknown {key} '{value}'")]
    UnknownValue { key: &'static str, value: String },
    #[error(
        "it follows graph contract {0}, this plugin reads contract {GRAPH_CONTRACT}: export it again with this version's omnitok-export"
    )]
    Contract(String),
    #[error("invalid omnitok.geometry: {0}")]
    Geometry(String),
    #[error("invalid omnitok.model_id: {0}")]
    ModelId(String),
    #[error(
        "it is {} graph, but this element needs {} graph (encoder.onnx / decoder.onnx)",
        got.article(), want.article()
    )]
    WrongRole { want: Role, got: Role },
    #[error("cannot read it: {0}")]
    Read(String),
    #[error(
        "it is an int8 graph with full-range weights (omnitok.int8_cpu 'x86-vnni'), which this CPU (x86 without AVX-512 VNNI or AVX-VNNI, whose uint8 x int8 kernels saturate) computes exactly only with the weights stored as uint8, and they cannot be: {0}"
    )]
    Unsigned(#[from] super::unsigned_weights::UnsignedError),
}

/// Whether ONNX Runtime's integer kernels compute full-range int8 weights exactly here: on
/// x86 only with VNNI (`vpdpbusd` accumulates in 32 bits; the AVX2 and AVX-512BW kernels sum
/// pairs of uint8 x int8 products in saturating 16 bits); other CPUs widen before they add.
pub fn full_range_int8_is_exact() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni") || std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}

/// How full-range int8 graphs (`omnitok.int8_cpu` `x86-vnni`) are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int8Kernels {
    /// ONNX Runtime's uint8 x int8 kernels accumulate in 32 bits here: the graph as stored.
    Wide,
    /// They would saturate (x86 without VNNI): the weights are stored as uint8 with zero point
    /// 128 in memory before the session is built, for the exact uint8 x uint8 kernels
    /// ([`super::unsigned_weights`]).
    Saturating,
}

impl Int8Kernels {
    /// This CPU's ([`full_range_int8_is_exact`]).
    pub fn here() -> Self {
        if full_range_int8_is_exact() {
            Int8Kernels::Wide
        } else {
            Int8Kernels::Saturating
        }
    }
}

/// The check of an int8 graph's `omnitok.int8_cpu`: `any`, `x86-vnni` or absent.
pub fn check_int8_cpu(int8_cpu: Option<&str>) -> Result<(), ModelError> {
    match int8_cpu {
        Some("any" | "x86-vnni") | None => Ok(()),
        Some(other) => Err(ModelError::UnknownValue {
            key: "omnitok.int8_cpu",
            value: other.into(),
        }),
    }
}

/// The bytes of `path` with its int8 weights stored as uint8, when it is a full-range int8
/// graph and `kernels` would saturate on it; `None` for a graph that runs as stored (one
/// whose metadata cannot be read is left to ONNX Runtime to refuse).
pub(crate) fn unsigned_copy(path: &Path, kernels: Int8Kernels) -> Result<Option<(Vec<u8>, Rewritten)>, ModelError> {
    if kernels == Int8Kernels::Wide {
        return Ok(None);
    }
    let mut bytes = std::fs::read(path).map_err(|e| ModelError::Read(e.to_string()))?;
    match unsigned_weights::metadata(&bytes, "omnitok.int8_cpu") {
        Ok(Some(cpu)) if cpu == "x86-vnni" => {
            let r = unsigned_weights::to_unsigned(&mut bytes)?;
            Ok(Some((bytes, r)))
        }
        _ => Ok(None),
    }
}

/// A graph ready to run, and what it is.
pub struct LoadedModel {
    pub engine: Box<dyn Engine>,
    pub info: ModelInfo,
    /// The provider the session runs on (CPU after a permitted fallback).
    pub active_provider: ExecutionProvider,
    /// Set when a GPU provider failed and `fallback` let the session run on CPU.
    pub fallback_reason: Option<String>,
    /// Set when full-range int8 weights were stored as uint8 for this CPU ([`Int8Kernels`]).
    pub int8_rewrite: Option<Rewritten>,
}

/// Loads `path` as the graph of `role` on the configured provider (a local ONNX Runtime
/// session).
pub fn load(path: &Path, role: Role, settings: &SessionSettings) -> Result<LoadedModel, ModelError> {
    load_for(path, role, settings, Int8Kernels::here())
}

/// [`load`] as on a CPU with these integer kernels (tests take the non-VNNI path this way).
pub fn load_for(
    path: &Path,
    role: Role,
    settings: &SessionSettings,
    kernels: Int8Kernels,
) -> Result<LoadedModel, ModelError> {
    if !path.is_file() {
        return Err(ModelError::NotAFile(path.to_path_buf()));
    }
    let rewritten = unsigned_copy(path, kernels)?;
    let bytes = rewritten.as_ref().map(|(b, _)| b.as_slice());
    let cpu = ExecutionProvider::Cpu;
    let (session, active_provider, fallback_reason) =
        match engine::build_session(path, bytes, settings, settings.provider) {
            Ok(s) => (s, settings.provider, None),
            Err(e) if settings.provider != cpu && settings.fallback => {
                let why = format!(
                    "execution provider '{}' is not usable ({e}); running on CPU",
                    settings.provider.nick()
                );
                let s = engine::build_session(path, bytes, settings, cpu).map_err(ModelError::Session)?;
                (s, cpu, Some(why))
            }
            Err(reason) if settings.provider != cpu => {
                return Err(ModelError::Provider {
                    provider: settings.provider,
                    reason,
                });
            }
            Err(e) => return Err(ModelError::Session(e)),
        };
    let mut info = ModelInfo::from_session(&session)?;
    info.path = path.to_path_buf();
    if info.role != role {
        return Err(ModelError::WrongRole {
            want: role,
            got: info.role,
        });
    }
    check_int8_cpu(info.int8_cpu.as_deref())?;
    Ok(LoadedModel {
        engine: Box::new(OrtEngine::new(session, active_provider, settings.device_id).map_err(ModelError::Session)?),
        info,
        active_provider,
        fallback_reason,
        int8_rewrite: rewritten.map(|(_, r)| r),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The `tiny` preset's decoder, as its metadata describes it.
    pub(crate) fn info(kind: Kind) -> ModelInfo {
        ModelInfo {
            path: PathBuf::from("/models/decoder.onnx"),
            role: Role::Decoder,
            kind,
            geometry: Geometry {
                size_multiple: 8,
                patch: 4,
                temporal_patch: 2,
                clip_frames: 5,
                channels: 8,
                codebook_size: 512,
            },
            config_json: "{}".into(),
            model_id: [7; 32],
            attention: "sdpa".into(),
            source: "preset tiny random-init seed 1".into(),
            precision: "f32".into(),
            int8_policy: None,
            int8_cpu: None,
        }
    }

    /// Every CPU runs full-range int8 graphs (rewritten where the kernels saturate); an unknown
    /// `omnitok.int8_cpu` is an error.
    #[test]
    fn unknown_int8_cpu_values_are_refused() {
        for v in [None, Some("any"), Some("x86-vnni")] {
            assert!(check_int8_cpu(v).is_ok());
        }
        let e = check_int8_cpu(Some("riscv")).unwrap_err().to_string();
        assert!(e.contains("unknown omnitok.int8_cpu 'riscv'"), "{e}");
    }

    /// The precision of the graph reaches the log line and, for int8 encoders, the stream
    /// header's informative model name; the identity stays the codebook's.
    #[test]
    fn precision_is_named_in_the_log_and_the_model_name() {
        let mut i = info(Kind::Vq);
        assert_eq!(i.short_name(), "omnitok-vq preset tiny random-init seed 1");
        assert!(i.describe().contains("precision f32"), "{}", i.describe());
        i.precision = "int8".into();
        i.int8_policy = Some(r#"{"keep_float":["decoder.to_pixels*"]}"#.into());
        assert_eq!(i.short_name(), "omnitok-vq preset tiny random-init seed 1 int8");
        let d = i.describe();
        assert!(
            d.contains("precision int8 (policy {") && d.contains("decoder.to_pixels*"),
            "{d}"
        );
    }

    #[test]
    fn chunk_frames_resolve_against_the_model() {
        let i = info(Kind::Vq);
        assert_eq!(i.chunk_frames(0), Ok(5));
        assert_eq!(i.chunk_frames(1), Ok(1));
        assert_eq!(i.chunk_frames(7), Ok(7));
        let e = i.chunk_frames(4).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid chunk-frames 4: it must be 1 + k x 2 (the model's temporal patch), e.g. 1, 3, 5 (0 = the model's clip length 5)"
        );
    }

    #[test]
    fn stream_header_pads_and_sizes_the_grid() {
        let i = info(Kind::Vq);
        let (h, bytes) = i.stream_header(34, 20, (25, 1), 5, PayloadType::F32).unwrap();
        assert_eq!((h.padded_width, h.padded_height), (40, 24));
        assert_eq!(h.grid, [3, 6, 10]);
        assert_eq!((h.fps_n, h.fps_d), (25, 1));
        assert_eq!(
            (h.channels, h.codebook_size, h.payload_type),
            (0, 512, PayloadType::U16)
        );
        assert_eq!(StreamHeader::decode(&bytes).unwrap().0, h);
        // Variable rate: 0/1. VAE: channels and the latent payload asked for.
        let (h, _) = info(Kind::Vae)
            .stream_header(8, 8, (0, 1), 1, PayloadType::F16)
            .unwrap();
        assert_eq!((h.fps_n, h.fps_d, h.grid), (0, 1, [1, 2, 2]));
        assert_eq!((h.channels, h.codebook_size, h.payload_type), (8, 0, PayloadType::F16));
        let (h, _) = i.stream_header(8, 8, (-1, 0), 1, PayloadType::F32).unwrap();
        assert_eq!((h.fps_n, h.fps_d), (0, 1));
        // Too large for a record, too large for a u32.
        let e = i.stream_header(32768, 32768, (25, 1), 5, PayloadType::F32).unwrap_err();
        assert!(e.to_string().contains("cannot encode 32768x32768 video"), "{e}");
        assert!(matches!(
            i.stream_header(u32::MAX, 8, (25, 1), 1, PayloadType::F32),
            Err(HeaderError::TooLarge { .. })
        ));
    }

    #[test]
    fn check_stream_names_what_differs() {
        let i = info(Kind::Vq);
        let (good, _) = i.stream_header(34, 20, (25, 1), 5, PayloadType::F32).unwrap();
        assert_eq!(i.check_stream(&good), Ok(()));
        let bad = |edit: &dyn Fn(&mut StreamHeader)| {
            let mut h = good.clone();
            edit(&mut h);
            i.check_stream(&h).unwrap_err().to_string()
        };
        let m = bad(&|h| h.model_id = [9; 32]);
        assert!(m.starts_with("model identity mismatch"), "{m}");
        assert!(m.contains(&"09".repeat(32)) && m.contains(&"07".repeat(32)), "{m}");
        assert!(m.contains("'omnitok-vq preset tiny"), "{m}");
        let m = bad(&|h| {
            h.model_id = [9; 32];
            h.model_name.clear()
        });
        assert!(m.contains("(name not in caps)"), "{m}");
        let m = bad(&|h| {
            h.payload_type = PayloadType::F32;
            h.codebook_size = 0;
            h.channels = 8
        });
        assert_eq!(
            m,
            "the stream carries f32 latents but /models/decoder.onnx is a VQ (token) decoder"
                .replace("f32", &PayloadType::F32.to_string())
        );
        let m = info(Kind::Vae).check_stream(&good).unwrap_err().to_string();
        assert!(
            m.contains("tokens but /models/decoder.onnx is a VAE (latent) decoder"),
            "{m}"
        );
        assert!(
            bad(&|h| h.codebook_size = 1024)
                .contains("codebook size 1024 of the stream does not match the VQ model's 512")
        );
        assert!(bad(&|h| h.payload_type = PayloadType::U32).contains("does not fit codebook size 512"));
        assert!(bad(&|h| h.padded_width = 36).contains("padded size 36x24 is not a multiple of the model's 8"));
        assert!(bad(&|h| h.chunk_frames = 4).contains("chunk-frames 4 is not 1 + k * 2"));
        assert!(
            bad(&|h| h.grid = [3, 6, 9])
                .contains("grid [3, 6, 9] of the stream does not match the model's grid [3, 6, 10]")
        );
        let mut vae = good.clone();
        (vae.payload_type, vae.codebook_size, vae.channels) = (PayloadType::F16, 0, 4);
        let m = info(Kind::Vae).check_stream(&vae).unwrap_err().to_string();
        assert_eq!(m, "latent channels 4 of the stream do not match the VAE model's 8");
    }

    #[test]
    fn load_errors_do_not_repeat_the_path() {
        let e = load(
            Path::new("/nonexistent/x.onnx"),
            Role::Encoder,
            &SessionSettings::default(),
        )
        .err()
        .unwrap();
        assert_eq!(e.to_string(), "model file /nonexistent/x.onnx does not exist");
        let e = ModelError::WrongRole {
            want: Role::Encoder,
            got: Role::Decoder,
        };
        assert_eq!(
            e.to_string(),
            "it is a decoder graph, but this element needs an encoder graph (encoder.onnx / decoder.onnx)"
        );
    }
}
