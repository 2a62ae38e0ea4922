//! Weights addressed by the official dotted state-dict key, from a checkpoint or
//! generated from a seed; every request is recorded so that unused or missing
//! tensors are reported.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;

use crate::checkpoint::{Tensor, TensorData};

/// Why the weights cannot serve a tensor the graphs need.
#[derive(Debug, Clone, PartialEq)]
pub enum Error {
    /// The checkpoint lacks the tensor.
    Missing { key: String, shape: Vec<usize> },
    /// The checkpoint's tensor has another shape than the config implies.
    Shape {
        key: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    /// The tensor holds integers where the graphs need floats.
    NotFloat { key: String },
    /// The tensor holds NaN or infinite values: `count` of its `len`.
    NonFinite { key: String, count: usize, len: usize },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Missing { key, shape } => {
                write!(f, "tensor '{key}' (shape {shape:?}) is missing from the checkpoint")
            }
            Error::Shape { key, found, expected } => {
                write!(f, "tensor '{key}' has shape {found:?}, the config needs {expected:?}")
            }
            Error::NotFloat { key } => write!(f, "tensor '{key}' holds integers, expected floats"),
            Error::NonFinite { key, count, len } => write!(
                f,
                "tensor '{key}' holds {count} non-finite value{} (NaN or infinity) out of {len}; \
                 the checkpoint is damaged or its training diverged",
                if *count == 1 { "" } else { "s" }
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Where tensors come from.
pub enum Source {
    Checkpoint(BTreeMap<String, Tensor>),
    /// Seeded random weights of the requested shapes (tests, benchmarks, demos).
    Random(u64),
}

pub struct Weights {
    source: Source,
    used: RefCell<BTreeMap<String, Vec<usize>>>,
}

impl Weights {
    pub fn new(source: Source) -> Self {
        Weights {
            source,
            used: RefCell::new(BTreeMap::new()),
        }
    }

    /// The float tensor `key`, which must have `shape` and finite values.
    pub fn get(&self, key: &str, shape: &[usize]) -> Result<Cow<'_, [f32]>, Error> {
        self.used.borrow_mut().insert(key.to_string(), shape.to_vec());
        let map = match &self.source {
            Source::Checkpoint(map) => map,
            Source::Random(seed) => return Ok(Cow::Owned(random_tensor(*seed, key, shape))),
        };
        let key = key.to_string();
        let Some(t) = map.get(&key) else {
            return Err(Error::Missing {
                key,
                shape: shape.to_vec(),
            });
        };
        if t.shape != shape {
            return Err(Error::Shape {
                key,
                found: t.shape.clone(),
                expected: shape.to_vec(),
            });
        }
        let TensorData::F32(v) = &t.data else {
            return Err(Error::NotFloat { key });
        };
        let count = v.iter().filter(|x| !x.is_finite()).count();
        if count > 0 {
            return Err(Error::NonFinite {
                key,
                count,
                len: v.len(),
            });
        }
        Ok(Cow::Borrowed(v.as_slice()))
    }

    /// Marks a tensor the graphs do not need but a complete checkpoint holds
    /// (e.g. `relative_position_index`, which the tracer recomputes), checking it when present.
    pub fn expect_unused(&self, key: &str) {
        if let Source::Checkpoint(map) = &self.source
            && let Some(t) = map.get(key)
        {
            self.used.borrow_mut().insert(key.to_string(), t.shape.clone());
        }
    }

    /// Keys present in the checkpoint that nothing asked for.
    pub fn unused(&self) -> Vec<String> {
        match &self.source {
            Source::Checkpoint(map) => {
                let used = self.used.borrow();
                map.keys().filter(|k| !used.contains_key(*k)).cloned().collect()
            }
            Source::Random(_) => Vec::new(),
        }
    }

    /// Number of parameters the graphs use.
    pub fn parameter_count(&self) -> usize {
        self.used.borrow().values().map(|s| s.iter().product::<usize>()).sum()
    }
}

/// SplitMix64: small, fast, and stable across platforms and versions.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Values shaped like a freshly initialised official model: LayerNorm scales 1 and
/// shifts 0, learned q/k scales 1, linear and bias-table weights N(0, 0.02) (the
/// `initialize_vit` init), depthwise convolutions uniform(±1/sqrt(27)), codebook N(0, 1).
/// Each tensor's stream depends only on the seed and its key.
pub fn random_tensor(seed: u64, key: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let leaf = key.rsplit('.').next().unwrap_or(key);
    let mut rng = SplitMix(seed ^ fnv1a(key));
    let is_vector = shape.len() == 1;
    match leaf {
        "gamma" | "q_scale" | "k_scale" => vec![1.0; n],
        "beta" => vec![0.0; n],
        "weight" if is_vector => vec![1.0; n], // nn.LayerNorm
        "bias" if key.contains("dsconv") => (0..n)
            .map(|_| ((rng.uniform() * 2.0 - 1.0) / 27f64.sqrt()) as f32)
            .collect(),
        "bias" => vec![0.0; n],
        "weight" if key.contains("dsconv") => (0..n)
            .map(|_| ((rng.uniform() * 2.0 - 1.0) / 27f64.sqrt()) as f32)
            .collect(),
        "embeddings" => (0..n).map(|_| rng.normal() as f32).collect(),
        _ => (0..n)
            .map(|_| (rng.normal() * 0.02).clamp(-0.04, 0.04) as f32)
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{DType, Tensor};

    fn checkpoint(key: &str, data: Vec<f32>) -> Weights {
        let t = Tensor {
            dtype: DType::F32,
            shape: vec![data.len()],
            data: TensorData::F32(data),
        };
        Weights::new(Source::Checkpoint(BTreeMap::from([(key.to_string(), t)])))
    }

    #[test]
    fn missing_misshapen_and_integer_tensors_are_typed_errors() {
        let w = checkpoint("a", vec![1.0, 2.0]);
        assert_eq!(
            w.get("b", &[2]),
            Err(Error::Missing {
                key: "b".into(),
                shape: vec![2]
            })
        );
        let e = w.get("a", &[3]).unwrap_err();
        assert_eq!(e.to_string(), "tensor 'a' has shape [2], the config needs [3]");
        let t = Tensor {
            dtype: DType::I64,
            shape: vec![1],
            data: TensorData::I64(vec![1]),
        };
        let w = Weights::new(Source::Checkpoint(BTreeMap::from([("i".to_string(), t)])));
        assert_eq!(w.get("i", &[1]), Err(Error::NotFloat { key: "i".into() }));
    }

    #[test]
    fn non_finite_weights_are_refused_naming_key_and_count() {
        let w = checkpoint(
            "encoder.x.weight",
            vec![f32::NAN, 1.0, f32::INFINITY, f32::NEG_INFINITY, 0.5],
        );
        let e = w.get("encoder.x.weight", &[5]).unwrap_err();
        assert!(matches!(e, Error::NonFinite { count: 3, len: 5, .. }), "{e:?}");
        let e = e.to_string();
        assert!(
            e.contains("'encoder.x.weight'") && e.contains("3 non-finite values") && e.contains("out of 5"),
            "{e}"
        );
        let w = checkpoint("k", vec![f32::NAN; 4]);
        let e = w.get("k", &[4]).unwrap_err().to_string();
        assert!(e.contains("4 non-finite"), "{e}");
        let w = checkpoint("k", vec![f32::MAX, -f32::MAX, 0.0, f32::MIN_POSITIVE]);
        assert_eq!(w.get("k", &[4]).unwrap().len(), 4);
    }
}
