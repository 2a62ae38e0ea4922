//! A blocking KServe v2 (Open Inference Protocol) HTTP client, as Triton Inference Server
//! speaks it: health, model readiness, model config, and inference with the binary tensor
//! data extension (a JSON header of `Inference-Header-Content-Length` bytes followed by the
//! raw little-endian tensors; never JSON numbers). GStreamer streaming threads are plain
//! threads, so this is plain blocking I/O with a timeout on every request.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::runtime::engine::{DType, Tensor, TensorData};

/// The header of the binary tensor data extension.
const HEADER_LENGTH: &str = "Inference-Header-Content-Length";
/// Largest response body read (a JSON answer or a batch of decoded frames).
const MAX_RESPONSE_BYTES: u64 = 8 << 30;
/// Largest JSON answer (health, config, errors).
const MAX_JSON_BYTES: u64 = 16 << 20;

/// Why a request failed. `retryable` ones are transport failures and server-side
/// unavailability, which a restarted or recovering server can cure.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KserveError {
    #[error("cannot connect to {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("no answer from {url} within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url}: HTTP {status}: {message}")]
    Status { url: String, status: u16, message: String },
    #[error("{url}: {reason}")]
    Protocol { url: String, reason: String },
}

impl KserveError {
    /// Might the same request succeed later (a restart, an overloaded server)?
    pub fn retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            Self::Protocol { .. } => false,
        }
    }
}

/// One server: its base URL (`http://host:port`) and the timeout of each request.
pub struct Client {
    agent: ureq::Agent,
    base: String,
    timeout: Duration,
}

fn dtype_name(d: DType) -> &'static str {
    match d {
        DType::U8 => "UINT8",
        DType::I64 => "INT64",
        DType::F32 => "FP32",
    }
}

/// The bytes of a tensor's values, little-endian, as the binary extension carries them.
fn to_bytes(data: &TensorData) -> Vec<u8> {
    match data {
        TensorData::U8(v) => v.clone(),
        TensorData::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        TensorData::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
    }
}

fn from_bytes(dtype: DType, b: &[u8]) -> TensorData {
    match dtype {
        DType::U8 => TensorData::U8(b.to_vec()),
        DType::I64 => TensorData::I64(
            b.chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
        DType::F32 => TensorData::F32(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
        ),
    }
}

fn elem_size(d: DType) -> usize {
    match d {
        DType::U8 => 1,
        DType::F32 => 4,
        DType::I64 => 8,
    }
}

#[derive(Deserialize)]
struct OutputHeader {
    name: String,
    datatype: String,
    shape: Vec<i64>,
    #[serde(default)]
    parameters: serde_json::Map<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct InferHeader {
    #[serde(default)]
    outputs: Vec<OutputHeader>,
}

impl Client {
    pub fn new(base: &str, timeout: Duration) -> Self {
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Self {
            agent,
            base: base.trim_end_matches('/').to_string(),
            timeout,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn transport(&self, url: &str, e: ureq::Error) -> KserveError {
        let url = url.to_string();
        match e {
            ureq::Error::Timeout(_) => KserveError::Timeout {
                url,
                timeout: self.timeout,
            },
            ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => KserveError::Timeout {
                url,
                timeout: self.timeout,
            },
            ureq::Error::Io(io) => KserveError::Connect {
                url,
                reason: io.to_string(),
            },
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => KserveError::Connect {
                url,
                reason: e.to_string(),
            },
            other => KserveError::Protocol {
                url,
                reason: other.to_string(),
            },
        }
    }

    /// The body of a non-2xx answer as the error message the server gave (`{"error": ..}`).
    fn status_error(url: &str, status: u16, body: &[u8]) -> KserveError {
        let text = String::from_utf8_lossy(body);
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| text.chars().take(300).collect());
        KserveError::Status {
            url: url.to_string(),
            status,
            message,
        }
    }

    /// The JSON body of a 2xx answer (`Null` for an empty one), else the server's error.
    fn json_answer(
        &self,
        url: String,
        sent: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<serde_json::Value, KserveError> {
        let mut resp = sent.map_err(|e| self.transport(&url, e))?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_JSON_BYTES)
            .read_to_vec()
            .map_err(|e| self.transport(&url, e))?;
        if !(200..300).contains(&status) {
            return Err(Self::status_error(&url, status, &body));
        }
        if body.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_slice(&body).map_err(|e| KserveError::Protocol {
            url,
            reason: format!("not JSON: {e}"),
        })
    }

    /// GET `path`: the JSON body of a 2xx answer.
    pub fn get_json(&self, path: &str) -> Result<serde_json::Value, KserveError> {
        let url = self.url(path);
        let sent = self.agent.get(&url).call();
        self.json_answer(url, sent)
    }

    /// POST a JSON body, the JSON answer of a 2xx.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> Result<serde_json::Value, KserveError> {
        let url = self.url(path);
        let sent = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.to_string().as_bytes());
        self.json_answer(url, sent)
    }

    /// Runs `model` on `inputs`, asking for `outputs` as binary data; returns them in the
    /// order asked, each checked against its element type and its byte count.
    pub fn infer(
        &self,
        model: &str,
        inputs: &[(&str, Tensor)],
        outputs: &[(&str, DType)],
    ) -> Result<Vec<Tensor>, KserveError> {
        let url = self.url(&format!("/v2/models/{model}/infer"));
        let header = json!({
            "inputs": inputs.iter().map(|(name, t)| json!({
                "name": name,
                "shape": t.shape,
                "datatype": dtype_name(t.data.dtype()),
                "parameters": {"binary_data_size": t.shape.iter().product::<usize>() * elem_size(t.data.dtype())},
            })).collect::<Vec<_>>(),
            "outputs": outputs.iter().map(|(name, _)| json!({
                "name": name,
                "parameters": {"binary_data": true},
            })).collect::<Vec<_>>(),
        })
        .to_string();
        let mut body = header.clone().into_bytes();
        for (_, t) in inputs {
            body.extend_from_slice(&to_bytes(&t.data));
        }
        let mut resp = self
            .agent
            .post(&url)
            .header("Content-Type", "application/octet-stream")
            .header(HEADER_LENGTH, header.len().to_string())
            .send(&body[..])
            .map_err(|e| self.transport(&url, e))?;
        drop(body);
        let status = resp.status().as_u16();
        let json_len = resp
            .headers()
            .get(HEADER_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        let bytes = resp
            .body_mut()
            .with_config()
            .limit(MAX_RESPONSE_BYTES)
            .read_to_vec()
            .map_err(|e| self.transport(&url, e))?;
        if !(200..300).contains(&status) {
            return Err(Self::status_error(&url, status, &bytes));
        }
        let protocol = |reason: String| KserveError::Protocol {
            url: url.clone(),
            reason,
        };
        let json_len = json_len.unwrap_or(bytes.len());
        if json_len > bytes.len() {
            return Err(protocol(format!(
                "{HEADER_LENGTH} {json_len} exceeds the {} byte answer",
                bytes.len()
            )));
        }
        let head: InferHeader = serde_json::from_slice(&bytes[..json_len])
            .map_err(|e| protocol(format!("unreadable inference answer: {e}")))?;
        // Binary outputs follow the header in the order the header lists them.
        let mut offset = json_len;
        let mut got = Vec::with_capacity(head.outputs.len());
        for o in &head.outputs {
            let size = o
                .parameters
                .get("binary_data_size")
                .and_then(|v| v.as_u64())
                .ok_or_else(|| protocol(format!("output '{}' came without binary data", o.name)))?
                as usize;
            let end = offset
                .checked_add(size)
                .filter(|&e| e <= bytes.len())
                .ok_or_else(|| protocol(format!("output '{}' runs past the end of the answer", o.name)))?;
            got.push((o, &bytes[offset..end]));
            offset = end;
        }
        outputs
            .iter()
            .map(|&(name, dtype)| {
                let (o, data) = got
                    .iter()
                    .find(|(o, _)| o.name == name)
                    .ok_or_else(|| protocol(format!("the answer has no output '{name}'")))?;
                if o.datatype != dtype_name(dtype) {
                    return Err(protocol(format!(
                        "output '{name}' is {}, expected {}",
                        o.datatype,
                        dtype_name(dtype)
                    )));
                }
                let shape = o
                    .shape
                    .iter()
                    .map(|&d| usize::try_from(d))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|_| protocol(format!("output '{name}' has a negative dimension: {:?}", o.shape)))?;
                let want = shape
                    .iter()
                    .try_fold(elem_size(dtype), |a, &d| a.checked_mul(d))
                    .ok_or_else(|| protocol(format!("output '{name}' shape {shape:?} overflows")))?;
                if want != data.len() {
                    return Err(protocol(format!(
                        "output '{name}' of shape {shape:?} needs {want} bytes, the answer has {}",
                        data.len()
                    )));
                }
                Ok(Tensor {
                    shape,
                    data: from_bytes(dtype, data),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensors_travel_as_little_endian_bytes() {
        let t = TensorData::I64(vec![1, -2, 1 << 40]);
        let b = to_bytes(&t);
        assert_eq!(b.len(), 24);
        assert_eq!(&b[..8], &1i64.to_le_bytes());
        assert_eq!(from_bytes(DType::I64, &b), t);
        let f = TensorData::F32(vec![0.5, -3.25, f32::MIN_POSITIVE]);
        assert_eq!(from_bytes(DType::F32, &to_bytes(&f)), f);
        assert_eq!(
            (elem_size(DType::U8), elem_size(DType::F32), elem_size(DType::I64)),
            (1, 4, 8)
        );
    }

    #[test]
    fn only_transport_and_server_failures_are_retried() {
        let url = "http://h/x".to_string();
        let status = |status| KserveError::Status {
            url: url.clone(),
            status,
            message: String::new(),
        };
        assert!(status(503).retryable());
        assert!(!status(400).retryable());
        assert!(
            KserveError::Connect {
                url: url.clone(),
                reason: "refused".into()
            }
            .retryable()
        );
        assert!(
            !KserveError::Protocol {
                url,
                reason: "bad".into()
            }
            .retryable()
        );
    }
}
