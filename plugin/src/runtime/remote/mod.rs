//! Graphs run by a remote inference server (Triton Inference Server, or any server of the
//! KServe v2 protocol) instead of a local ONNX Runtime session: the elements'
//! `inference-server` / `inference-model` properties. [`load`] checks that the server is
//! live and the model ready, and builds the [`ModelInfo`] from the `omnitok.*` entries the
//! exporter writes into the model config's `parameters` (`omnitok-export
//! --triton-repository`), so a stream header is the same whichever way it was encoded.
//! [`engine::RemoteEngine`] sends each batch over HTTP with binary tensor data.
//! docs/SCALE-OUT.md has the deployment picture.

pub mod engine;
pub mod kserve;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use kserve::{Client, KserveError};

use super::model::{ExecutionProvider, LoadedModel, ModelError, ModelInfo, Role};

/// What the elements' inference-* properties say.
#[derive(Debug, Clone, PartialEq)]
pub struct RemoteSettings {
    /// `http://host:port` (a path prefix is kept: `http://gateway/triton`).
    pub server: String,
    /// The model's name on the server (`<name>_encoder` / `<name>_decoder` in a repository
    /// written by `omnitok-export --triton-repository`).
    pub model: String,
    /// Per request (connect, send, answer).
    pub timeout: Duration,
    /// Retries of a request that failed for a transport or server-side reason, each after
    /// a warning; 0: the first failure is the error.
    pub retries: u32,
}

/// Why a remote model cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    #[error("{0}")]
    Url(String),
    #[error("inference server {server} is not reachable: {source}")]
    Unreachable { server: String, source: KserveError },
    #[error("inference server {server} is not ready (/v2/health/ready answered: {source})")]
    NotReady { server: String, source: KserveError },
    #[error(
        "inference server {server} has no model '{model}' (it has: {})",
        if available.is_empty() { "none".to_string() } else { available.join(", ") }
    )]
    ModelMissing {
        server: String,
        model: String,
        available: Vec<String>,
    },
    #[error("model '{model}' on {server} is not ready: {reason}")]
    ModelNotReady {
        server: String,
        model: String,
        reason: String,
    },
    #[error("model '{model}' on {server}: {source}")]
    Config {
        server: String,
        model: String,
        source: KserveError,
    },
    #[error(
        "model '{model}' on {server} carries no usable omnitok metadata in its config parameters ({source}): \
         serve a repository written by omnitok-export --triton-repository"
    )]
    Metadata {
        server: String,
        model: String,
        source: ModelError,
    },
    #[error("model '{model}' on {server}: {source}")]
    WrongRole {
        server: String,
        model: String,
        source: ModelError,
    },
}

/// The base URL of `server`: http only (gRPC and TLS are not built in: docs/SCALE-OUT.md).
pub fn parse_server(server: &str) -> Result<String, RemoteError> {
    let s = server.trim();
    if let Some(rest) = s.strip_prefix("http://") {
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty() {
            return Err(RemoteError::Url(format!(
                "inference-server '{server}' names no host (expected http://HOST:PORT)"
            )));
        }
        return Ok(s.trim_end_matches('/').to_string());
    }
    let why = if s.starts_with("grpc://") {
        "gRPC is not supported by this plugin: use the server's HTTP endpoint (Triton: http://HOST:8000)"
    } else if s.starts_with("https://") {
        "TLS is not built in: use http:// (inside the cluster, or through a TLS-terminating proxy)"
    } else {
        "expected http://HOST:PORT"
    };
    Err(RemoteError::Url(format!("inference-server '{server}': {why}")))
}

/// Set while the element flushes or stops: a retry series in progress gives up at once
/// instead of sleeping through its back-off (a request in flight still ends only at its
/// answer or at `inference-timeout`). The element's [`crate::runtime::slot::GraphSlot`]
/// holds it; clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    pub fn set(&self, on: bool) {
        self.0.store(on, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps `d`, or less when interrupted; false when interrupted.
    fn sleep(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        while !self.is_set() {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(20)));
        }
        false
    }
}

/// Waits `attempt`'s back-off (0.25 s, 0.5 s, 1 s, ... at most 4 s) before a retry.
pub(crate) fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64 << attempt.min(4))
}

/// Runs `f` up to `1 + retries` times while it fails with a retryable error, calling
/// `warn` before each retry; gives up with the last error when `interrupt` is set.
pub(crate) fn with_retries<T>(
    retries: u32,
    warn: &dyn Fn(&str),
    interrupt: &Interrupt,
    mut f: impl FnMut() -> Result<T, KserveError>,
) -> Result<T, KserveError> {
    let mut attempt = 0;
    loop {
        match f() {
            Err(e) if e.retryable() && attempt < retries && !interrupt.is_set() => {
                let wait = backoff(attempt);
                attempt += 1;
                warn(&format!(
                    "{e}; retry {attempt} of {retries} in {:.2} s",
                    wait.as_secs_f64()
                ));
                if !interrupt.sleep(wait) {
                    return Err(e);
                }
            }
            r => return r,
        }
    }
}

fn state_of(index: &serde_json::Value, model: &str) -> Option<(String, String)> {
    index.as_array()?.iter().find_map(|m| {
        (m.get("name")?.as_str()? == model).then(|| {
            let s = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or("").to_string();
            (s("state"), s("reason"))
        })
    })
}

/// Connects to the server of `settings`, checks that the model is there and ready and is a
/// graph of `role`, and returns it with a [`engine::RemoteEngine`]. `warn` gets one line per
/// retry (the elements post it as a warning); `interrupt` cuts retry series short.
pub fn load(
    settings: &RemoteSettings,
    role: Role,
    warn: Box<dyn Fn(&str) + Send>,
    interrupt: Interrupt,
) -> Result<LoadedModel, RemoteError> {
    let server = parse_server(&settings.server)?;
    let client = Client::new(&server, settings.timeout);
    let model = settings.model.clone();
    let ready = with_retries(settings.retries, &*warn, &interrupt, || {
        client.get_json("/v2/health/ready")
    });
    match ready {
        Ok(_) => {}
        Err(source @ KserveError::Status { .. }) => return Err(RemoteError::NotReady { server, source }),
        Err(source) => return Err(RemoteError::Unreachable { server, source }),
    }
    // The repository index names what is there and why a model did not load; servers
    // without the repository extension only answer readiness.
    if let Ok(index) = client.post_json("/v2/repository/index", &serde_json::json!({})) {
        match state_of(&index, &model) {
            None => {
                let mut available: Vec<String> = index
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| m.get("name")?.as_str().map(str::to_string))
                    .collect();
                available.dedup();
                return Err(RemoteError::ModelMissing {
                    server,
                    model,
                    available,
                });
            }
            Some((state, reason)) if state != "READY" => {
                let reason = if reason.is_empty() {
                    state
                } else {
                    format!("{state}: {reason}")
                };
                return Err(RemoteError::ModelNotReady { server, model, reason });
            }
            Some(_) => {}
        }
    } else if let Err(e) = client.get_json(&format!("/v2/models/{model}/ready")) {
        return Err(RemoteError::ModelNotReady {
            server,
            model,
            reason: e.to_string(),
        });
    }
    let config = client
        .get_json(&format!("/v2/models/{model}/config"))
        .map_err(|source| RemoteError::Config {
            server: server.clone(),
            model: model.clone(),
            source,
        })?;
    let params = config.get("parameters").cloned().unwrap_or_default();
    let custom = |k: &str| {
        params
            .get(k)
            .and_then(|p| p.get("string_value"))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    let mut info = ModelInfo::from_metadata(&custom).map_err(|source| RemoteError::Metadata {
        server: server.clone(),
        model: model.clone(),
        source,
    })?;
    info.path = PathBuf::from(format!("{server}/v2/models/{model}"));
    if info.role != role {
        return Err(RemoteError::WrongRole {
            server,
            model,
            source: ModelError::WrongRole {
                want: role,
                got: info.role,
            },
        });
    }
    Ok(LoadedModel {
        engine: Box::new(engine::RemoteEngine::new(
            client,
            model,
            settings.retries,
            warn,
            interrupt,
        )),
        info,
        active_provider: ExecutionProvider::Remote,
        fallback_reason: None,
        int8_rewrite: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_servers_are_accepted() {
        assert_eq!(parse_server("http://127.0.0.1:8000/").unwrap(), "http://127.0.0.1:8000");
        assert_eq!(parse_server("http://gw/triton").unwrap(), "http://gw/triton");
        for (bad, says) in [
            ("grpc://h:8001", "gRPC is not supported"),
            ("https://h", "TLS is not built in"),
            ("h:8000", "expected http://HOST:PORT"),
            ("http://", "names no host"),
        ] {
            let e = parse_server(bad).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn retries_are_bounded_and_warned() {
        let warnings = std::sync::Mutex::new(Vec::new());
        let mut calls = 0;
        let never = Interrupt::default();
        let r: Result<(), _> = with_retries(2, &|w| warnings.lock().unwrap().push(w.to_string()), &never, || {
            calls += 1;
            Err(KserveError::Connect {
                url: "http://h/v2".into(),
                reason: "refused".into(),
            })
        });
        assert!(r.is_err());
        assert_eq!(calls, 3);
        let w = warnings.into_inner().unwrap();
        assert_eq!(w.len(), 2);
        assert!(w[1].contains("retry 2 of 2"), "{w:?}");
        // A refusal by the server itself is not retried.
        let mut calls = 0;
        let _ = with_retries(5, &|_| {}, &never, || -> Result<(), _> {
            calls += 1;
            Err(KserveError::Status {
                url: "u".into(),
                status: 400,
                message: "unknown model".into(),
            })
        });
        assert_eq!(calls, 1);
    }
}
