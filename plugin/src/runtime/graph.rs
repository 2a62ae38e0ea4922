//! The graph I/O contract (docs/GRAPHS.md, `omnitok.contract` 2), in one place: tensor
//! names, element types, shapes and batching of `encoder.onnx` and `decoder.onnx`.
//! [`EncoderGraph::run`] turns a batch of padded chunks into one payload per chunk,
//! [`DecoderGraph::run`] a batch of chunk records into padded frames. Both run on an
//! [`Engine`] and know nothing of GStreamer.

use super::engine::{DType, Engine, EngineError, Tensor, TensorData};
use super::model::{Kind, LoadedModel, ModelInfo, Role};
use super::sampling;
use crate::format::{ChunkRecord, Payload, StreamHeader};

/// encoder.onnx input: uint8 `[batch, frames, height, width, 3]`.
const ENC_FRAMES: &str = "frames";
/// encoder.onnx VQ output: int64 `[batch, t, h, w]`.
const ENC_TOKENS: &str = "tokens";
/// encoder.onnx VAE outputs: float32 `[batch, C, t, h, w]`.
const ENC_LATENT_MEAN: &str = "latent_mean";
const ENC_LATENT_LOGVAR: &str = "latent_logvar";
/// decoder.onnx inputs: int64 `[batch, t, h, w]` (VQ) or float32 `[batch, C, t, h, w]` (VAE).
const DEC_TOKENS: &str = "tokens";
const DEC_LATENT: &str = "latent";
/// decoder.onnx output: uint8 `[batch, frames, height, width, 3]`.
const DEC_FRAMES: &str = "frames";
/// RGB.
const CHANNELS: usize = 3;

/// Why a graph run failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error("input of {got} bytes for {batch} chunk(s) of {frames} frames at {width}x{height}, expected {want}")]
    InputSize {
        got: usize,
        want: usize,
        batch: usize,
        frames: usize,
        width: usize,
        height: usize,
    },
    #[error("output '{name}' has {got} elements, expected {want}: the graph does not match its metadata")]
    OutputLen {
        name: &'static str,
        got: usize,
        want: usize,
    },
    #[error("output '{name}' has shape {got:?}, expected {want:?}")]
    OutputShape {
        name: &'static str,
        got: Vec<usize>,
        want: Vec<usize>,
    },
    #[error("output '{name}' is {got:?}, the contract says {want:?}")]
    OutputType {
        name: &'static str,
        got: DType,
        want: DType,
    },
    #[error("token {0} is negative")]
    NegativeToken(i64),
    #[error("chunk holds {holds}, stream header says {says}")]
    PayloadKind { holds: &'static str, says: &'static str },
    #[error("{0} chunk(s) in one batch: too many")]
    Batch(usize),
}

/// A graph of a role, built from the loaded model (what [`super::slot::GraphSlot`] holds).
pub trait Graph: Send + Sized {
    const ROLE: Role;
    fn new(model: LoadedModel) -> Self;
}

/// Chunks of one stream at one padded size: what both graphs' shapes follow from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkShape {
    pub frames: usize,
    pub width: usize,
    pub height: usize,
}

impl ChunkShape {
    pub fn of(header: &StreamHeader) -> Self {
        Self {
            frames: header.chunk_frames as usize,
            width: header.padded_width as usize,
            height: header.padded_height as usize,
        }
    }

    /// Bytes of one padded RGB frame.
    pub fn frame_bytes(&self) -> Option<usize> {
        self.width.checked_mul(self.height)?.checked_mul(CHANNELS)
    }

    /// Bytes of one chunk.
    pub fn chunk_bytes(&self) -> Option<usize> {
        self.frame_bytes()?.checked_mul(self.frames)
    }

    fn batch_dims(&self, batch: usize) -> Vec<usize> {
        vec![batch, self.frames, self.height, self.width, CHANNELS]
    }
}

/// VAE sampling: `mean + exp(0.5 logvar) noise`, the noise seeded per chunk index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampling {
    pub seed: u64,
    /// Index (in the stream) of the batch's first chunk.
    pub first_index: u64,
}

fn take(out: &mut std::vec::IntoIter<Tensor>, name: &'static str) -> Result<Tensor, GraphError> {
    out.next().ok_or(GraphError::OutputLen { name, got: 0, want: 1 })
}

fn check_len(name: &'static str, got: usize, want: usize) -> Result<(), GraphError> {
    if got == want {
        Ok(())
    } else {
        Err(GraphError::OutputLen { name, got, want })
    }
}

fn f32s(name: &'static str, t: Tensor) -> Result<Vec<f32>, GraphError> {
    match t.data {
        TensorData::F32(v) => Ok(v),
        other => Err(GraphError::OutputType {
            name,
            got: other.dtype(),
            want: DType::F32,
        }),
    }
}

/// encoder.onnx: padded RGB chunks to token or latent payloads.
pub struct EncoderGraph {
    engine: Box<dyn Engine>,
    kind: Kind,
}

impl Graph for EncoderGraph {
    const ROLE: Role = Role::Encoder;
    fn new(model: LoadedModel) -> Self {
        Self::with_engine(model.engine, &model.info)
    }
}

impl EncoderGraph {
    pub fn with_engine(engine: Box<dyn Engine>, info: &ModelInfo) -> Self {
        Self {
            engine,
            kind: info.kind,
        }
    }

    /// Encodes `frames`, `batch` chunks of `shape` back to back (`[batch, frames, height,
    /// width, 3]` bytes), into one payload of `per_chunk` elements per chunk (the header's
    /// `elements_per_chunk`). VAE: the mean, or a sample when `sampling` is set.
    pub fn run(
        &mut self,
        frames: Vec<u8>,
        batch: usize,
        shape: ChunkShape,
        per_chunk: usize,
        sampling: Option<Sampling>,
    ) -> Result<Vec<Payload>, GraphError> {
        let want = shape.chunk_bytes().and_then(|c| c.checked_mul(batch));
        if want != Some(frames.len()) {
            return Err(GraphError::InputSize {
                got: frames.len(),
                want: want.unwrap_or(usize::MAX),
                batch,
                frames: shape.frames,
                width: shape.width,
                height: shape.height,
            });
        }
        let total = per_chunk.checked_mul(batch).ok_or(GraphError::Batch(batch))?;
        let input = Tensor {
            shape: shape.batch_dims(batch),
            data: TensorData::U8(frames),
        };
        let inputs = vec![(ENC_FRAMES, input)];
        match self.kind {
            Kind::Vq => {
                let mut out = self.engine.run(inputs, &[(ENC_TOKENS, DType::I64)])?.into_iter();
                let tokens = match take(&mut out, ENC_TOKENS)?.data {
                    TensorData::I64(v) => v,
                    other => {
                        return Err(GraphError::OutputType {
                            name: ENC_TOKENS,
                            got: other.dtype(),
                            want: DType::I64,
                        });
                    }
                };
                check_len(ENC_TOKENS, tokens.len(), total)?;
                tokens
                    .chunks_exact(per_chunk.max(1))
                    .map(|t| {
                        t.iter()
                            .map(|&v| u32::try_from(v).map_err(|_| GraphError::NegativeToken(v)))
                            .collect::<Result<Vec<u32>, _>>()
                            .map(Payload::Tokens)
                    })
                    .collect()
            }
            Kind::Vae => {
                let outputs: &[(&str, DType)] = if sampling.is_some() {
                    &[(ENC_LATENT_MEAN, DType::F32), (ENC_LATENT_LOGVAR, DType::F32)]
                } else {
                    &[(ENC_LATENT_MEAN, DType::F32)]
                };
                let mut out = self.engine.run(inputs, outputs)?.into_iter();
                let mean = f32s(ENC_LATENT_MEAN, take(&mut out, ENC_LATENT_MEAN)?)?;
                check_len(ENC_LATENT_MEAN, mean.len(), total)?;
                let Some(s) = sampling else {
                    return Ok(mean
                        .chunks_exact(per_chunk.max(1))
                        .map(|m| Payload::Latents(m.to_vec()))
                        .collect());
                };
                let logvar = f32s(ENC_LATENT_LOGVAR, take(&mut out, ENC_LATENT_LOGVAR)?)?;
                check_len(ENC_LATENT_LOGVAR, logvar.len(), total)?;
                Ok(mean
                    .chunks_exact(per_chunk.max(1))
                    .zip(logvar.chunks_exact(per_chunk.max(1)))
                    .enumerate()
                    .map(|(i, (m, lv))| {
                        Payload::Latents(sampling::sample(m, lv, s.seed, s.first_index.wrapping_add(i as u64)))
                    })
                    .collect())
            }
        }
    }
}

/// Padded frames out of decoder.onnx: `[batch, frames, height, width, 3]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Frames {
    data: Vec<u8>,
    shape: ChunkShape,
    batch: usize,
}

impl Frames {
    pub fn batch(&self) -> usize {
        self.batch
    }

    pub fn shape(&self) -> ChunkShape {
        self.shape
    }

    /// Frame `frame` of chunk `chunk`: tightly packed padded RGB rows.
    pub fn frame(&self, chunk: usize, frame: usize) -> Option<&[u8]> {
        let n = self.shape.frame_bytes()?;
        if chunk >= self.batch || frame >= self.shape.frames {
            return None;
        }
        let start = (chunk * self.shape.frames + frame) * n;
        self.data.get(start..start + n)
    }
}

/// decoder.onnx: chunk records to padded RGB frames.
pub struct DecoderGraph {
    engine: Box<dyn Engine>,
}

impl Graph for DecoderGraph {
    const ROLE: Role = Role::Decoder;
    fn new(model: LoadedModel) -> Self {
        Self::with_engine(model.engine)
    }
}

impl DecoderGraph {
    pub fn with_engine(engine: Box<dyn Engine>) -> Self {
        Self { engine }
    }

    /// Decodes records of the stream `header` describes (one run for all of them).
    pub fn run<'a>(
        &mut self,
        header: &StreamHeader,
        records: impl ExactSizeIterator<Item = &'a ChunkRecord>,
    ) -> Result<Frames, GraphError> {
        let [t, h, w] = header.grid.map(|v| v as usize);
        let b = records.len();
        let per_chunk = header.elements_per_chunk() as usize;
        let n = per_chunk.checked_mul(b).ok_or(GraphError::Batch(b))?;
        let tokens = header.payload_type.is_tokens();
        let (mut ids, mut latents) = (Vec::new(), Vec::new());
        if tokens {
            ids.reserve(n)
        } else {
            latents.reserve(n)
        }
        for r in records {
            match (&r.payload, tokens) {
                (Payload::Tokens(t), true) => ids.extend(t.iter().map(|&x| i64::from(x))),
                (Payload::Latents(l), false) => latents.extend_from_slice(l),
                (_, says_tokens) => {
                    let [holds, says] = if says_tokens {
                        ["latents", "tokens"]
                    } else {
                        ["tokens", "latents"]
                    };
                    return Err(GraphError::PayloadKind { holds, says });
                }
            }
        }
        let input = if tokens {
            let shape = vec![b, t, h, w];
            (
                DEC_TOKENS,
                Tensor {
                    shape,
                    data: TensorData::I64(ids),
                },
            )
        } else {
            let shape = vec![b, header.channels as usize, t, h, w];
            (
                DEC_LATENT,
                Tensor {
                    shape,
                    data: TensorData::F32(latents),
                },
            )
        };
        let out = self.engine.run(vec![input], &[(DEC_FRAMES, DType::U8)])?;
        let frames = out.into_iter().next().ok_or(GraphError::OutputLen {
            name: DEC_FRAMES,
            got: 0,
            want: 1,
        })?;
        let shape = ChunkShape::of(header);
        let want = shape.batch_dims(b);
        if frames.shape != want {
            return Err(GraphError::OutputShape {
                name: DEC_FRAMES,
                got: frames.shape,
                want,
            });
        }
        match frames.data {
            TensorData::U8(data) => Ok(Frames { data, shape, batch: b }),
            other => Err(GraphError::OutputType {
                name: DEC_FRAMES,
                got: other.dtype(),
                want: DType::U8,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::PayloadType;
    use crate::runtime::model::tests::info;

    /// An engine that checks the request and answers with a pattern.
    struct Fake {
        want_input: (&'static str, Vec<usize>),
        reply: Vec<Tensor>,
    }

    impl Engine for Fake {
        fn run(&mut self, inputs: Vec<(&str, Tensor)>, outputs: &[(&str, DType)]) -> Result<Vec<Tensor>, EngineError> {
            assert_eq!(inputs.len(), 1);
            assert_eq!(
                (inputs[0].0, &inputs[0].1.shape),
                (self.want_input.0, &self.want_input.1)
            );
            let len = match &inputs[0].1.data {
                TensorData::U8(v) => v.len(),
                TensorData::I64(v) => v.len(),
                TensorData::F32(v) => v.len(),
            };
            assert_eq!(len, inputs[0].1.shape.iter().product::<usize>());
            assert_eq!(outputs.len(), self.reply.len());
            Ok(std::mem::take(&mut self.reply))
        }
    }

    const SHAPE: ChunkShape = ChunkShape {
        frames: 5,
        width: 16,
        height: 8,
    };

    #[test]
    fn encoder_splits_tokens_per_chunk() {
        let reply = Tensor {
            shape: vec![2, 3, 2, 4],
            data: TensorData::I64((0..48).collect()),
        };
        let fake = Fake {
            want_input: ("frames", vec![2, 5, 8, 16, 3]),
            reply: vec![reply],
        };
        let mut g = EncoderGraph::with_engine(Box::new(fake), &info(Kind::Vq));
        let p = g.run(vec![0; 2 * 5 * 8 * 16 * 3], 2, SHAPE, 24, None).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1], Payload::Tokens((24..48).collect()));
        // A wrong input size never reaches the engine.
        let fake = Fake {
            want_input: ("frames", vec![]),
            reply: vec![],
        };
        let mut g = EncoderGraph::with_engine(Box::new(fake), &info(Kind::Vq));
        assert!(matches!(
            g.run(vec![0; 7], 1, SHAPE, 24, None),
            Err(GraphError::InputSize { .. })
        ));
    }

    #[test]
    fn encoder_checks_output_lengths_and_signs() {
        let reply = |v: Vec<i64>| Fake {
            want_input: ("frames", vec![1, 5, 8, 16, 3]),
            reply: vec![Tensor {
                shape: vec![v.len()],
                data: TensorData::I64(v),
            }],
        };
        let frames = || vec![0; 5 * 8 * 16 * 3];
        let mut g = EncoderGraph::with_engine(Box::new(reply(vec![1; 23])), &info(Kind::Vq));
        let e = g.run(frames(), 1, SHAPE, 24, None).unwrap_err();
        assert_eq!(
            e.to_string(),
            "output 'tokens' has 23 elements, expected 24: the graph does not match its metadata"
        );
        let mut v = vec![1; 24];
        v[3] = -1;
        let mut g = EncoderGraph::with_engine(Box::new(reply(v)), &info(Kind::Vq));
        assert_eq!(
            g.run(frames(), 1, SHAPE, 24, None).unwrap_err().to_string(),
            "token -1 is negative"
        );
    }

    #[test]
    fn encoder_samples_latents_per_chunk_index() {
        let f32t = |v: Vec<f32>| Tensor {
            shape: vec![v.len()],
            data: TensorData::F32(v),
        };
        let mean: Vec<f32> = (0..8).map(|i| i as f32).collect();
        let logvar = vec![0.0f32; 8];
        let fake = Fake {
            want_input: ("frames", vec![2, 5, 8, 16, 3]),
            reply: vec![f32t(mean.clone()), f32t(logvar.clone())],
        };
        let mut g = EncoderGraph::with_engine(Box::new(fake), &info(Kind::Vae));
        let s = Sampling {
            seed: 3,
            first_index: 10,
        };
        let p = g.run(vec![0; 2 * 5 * 8 * 16 * 3], 2, SHAPE, 4, Some(s)).unwrap();
        assert_eq!(
            p[1],
            Payload::Latents(sampling::sample(&mean[4..], &logvar[4..], 3, 11))
        );
        let fake = Fake {
            want_input: ("frames", vec![1, 5, 8, 16, 3]),
            reply: vec![f32t(mean[..4].to_vec())],
        };
        let mut g = EncoderGraph::with_engine(Box::new(fake), &info(Kind::Vae));
        let p = g.run(vec![0; 5 * 8 * 16 * 3], 1, SHAPE, 4, None).unwrap();
        assert_eq!(p, [Payload::Latents(mean[..4].to_vec())]);
    }

    fn header(payload_type: PayloadType) -> StreamHeader {
        let (mut h, _) = info(Kind::Vq)
            .stream_header(16, 8, (25, 1), 5, PayloadType::F32)
            .unwrap();
        h.payload_type = payload_type;
        if !payload_type.is_tokens() {
            (h.codebook_size, h.channels) = (0, 8);
        }
        h
    }

    fn record(h: &StreamHeader, payload: Payload) -> ChunkRecord {
        ChunkRecord {
            pts: None,
            duration: None,
            real_frames: 5,
            grid: h.grid,
            payload,
            frame_pts: None,
        }
    }

    #[test]
    fn decoder_batches_records_and_checks_the_frames() {
        let h = header(PayloadType::U16);
        let n = h.elements_per_chunk() as usize;
        let recs = [
            record(&h, Payload::Tokens(vec![1; n])),
            record(&h, Payload::Tokens(vec![2; n])),
        ];
        let frame = 8 * 16 * 3;
        let fake = Fake {
            want_input: ("tokens", vec![2, 3, 2, 4]),
            reply: vec![Tensor {
                shape: vec![2, 5, 8, 16, 3],
                data: TensorData::U8((0..10).flat_map(|i| vec![i as u8; frame]).collect()),
            }],
        };
        let mut g = DecoderGraph::with_engine(Box::new(fake));
        let f = g.run(&h, recs.iter()).unwrap();
        assert_eq!(f.batch(), 2);
        assert_eq!(f.frame(1, 2).unwrap(), &vec![7u8; frame][..]);
        assert_eq!(f.frame(2, 0), None);
        assert_eq!(f.frame(0, 5), None);

        let fake = Fake {
            want_input: ("tokens", vec![1, 3, 2, 4]),
            reply: vec![Tensor {
                shape: vec![1, 5, 8, 8, 3],
                data: TensorData::U8(vec![0; 5 * 8 * 8 * 3]),
            }],
        };
        let mut g = DecoderGraph::with_engine(Box::new(fake));
        let e = g.run(&h, recs[..1].iter()).unwrap_err();
        assert!(matches!(e, GraphError::OutputShape { .. }), "{e}");
    }

    #[test]
    fn decoder_latents_and_mismatched_payloads() {
        let h = header(PayloadType::F32);
        let n = h.elements_per_chunk() as usize;
        let fake = Fake {
            want_input: ("latent", vec![1, 8, 3, 2, 4]),
            reply: vec![Tensor {
                shape: vec![1, 5, 8, 16, 3],
                data: TensorData::U8(vec![0; 5 * 8 * 16 * 3]),
            }],
        };
        let mut g = DecoderGraph::with_engine(Box::new(fake));
        let rec = record(&h, Payload::Latents(vec![0.5; n]));
        assert!(g.run(&h, [rec].iter()).is_ok());
        let rec = record(&h, Payload::Tokens(vec![0; 24]));
        let e = g.run(&h, [rec].iter()).unwrap_err();
        assert_eq!(e.to_string(), "chunk holds tokens, stream header says latents");
    }
}
