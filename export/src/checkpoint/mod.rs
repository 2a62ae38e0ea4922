//! Checkpoint import: PyTorch-Lightning `.ckpt` files (torch zip archives) and
//! `.safetensors` files, read without Python and without executing anything.
//!
//! * [`load`] picks the format from the file's content, returns the inference
//!   weights (training-only tensors are skipped without reading their data),
//!   the Lightning hyper-parameters, and the SHA-256 of the whole file.
//! * The pickle inside a `.ckpt` is run by a restricted unpickler
//!   (`pickle.rs`) that resolves globals only against an allowlist
//!   and never calls anything.
//! * The file is read once, sequentially: every byte is hashed, and storage
//!   records / tensor data are decoded straight from the file as they go by.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

mod convert;
mod json;
mod pickle;
mod safetensors;
mod stream;
mod torch;

use stream::Input;

/// Element type of a tensor as stored in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    U8,
    Bool,
}

/// Decoded tensor elements, row-major. Floats are widened to f32 (exactly for
/// f16/bf16; f64 is rounded to the nearest f32); integers and bools to i64.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A contiguous tensor: `data.len()` is the product of `shape`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The dtype the file stored it in.
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// A hyper-parameter value. Pickled values with no counterpart here (tensors,
/// opaque objects) appear as a description in angle brackets, e.g. `"<tensor>"`;
/// integers beyond i64 as their decimal text.
#[derive(Debug, Clone, PartialEq)]
pub enum HyperValue {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<HyperValue>),
    Dict(BTreeMap<String, HyperValue>),
}

/// The two file formats [`load`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A torch zip archive (`torch.save`, a Lightning `.ckpt`).
    Torch,
    Safetensors,
}

/// What [`load`] returns.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Which format the file turned out to be (by its content, not its name).
    pub format: Format,
    /// Inference weights only, keyed by the state_dict key.
    pub tensors: BTreeMap<String, Tensor>,
    /// The `argparse.Namespace` fields Lightning saved in `hyper_parameters`
    /// (`.ckpt` only; `None` for safetensors or a checkpoint without them).
    pub hyper_parameters: Option<BTreeMap<String, HyperValue>>,
    /// Lowercase hex SHA-256 of the whole file.
    pub sha256: String,
    /// Number of training-only tensors skipped (see [`is_training_only`]).
    pub skipped: usize,
}

/// Whether a state-dict key names a tensor that only training uses: the
/// discriminators, the perceptual loss, and the codebook's statistics.
pub fn is_training_only(key: &str) -> bool {
    key.starts_with("image_discriminator.")
        || key.starts_with("video_discriminator.")
        || key.starts_with("perceptual_model.")
        || matches!(key, "codebook.N" | "codebook.z_avg" | "codebook.codebook_usage")
}

/// Loads a `.ckpt` (torch zip archive) or `.safetensors` file, chosen by its
/// content. `progress(done_bytes, total_bytes)` is called as the file is read
/// (first with 0, last with the file size). Every error names the file.
pub fn load(path: &Path, progress: &mut dyn FnMut(u64, u64)) -> Result<Checkpoint, Error> {
    load_input(Input::File(path), progress).map_err(|e| e.at(path))
}

/// [`load`] for a checkpoint already in memory.
pub fn load_bytes(bytes: &[u8]) -> Result<Checkpoint, Error> {
    load_input(Input::Bytes(bytes), &mut |_, _| {})
}

/// Why a checkpoint cannot be read. [`load`]'s errors name the file.
#[derive(Debug)]
pub enum Error {
    /// The file cannot be opened or read.
    Io {
        path: Option<PathBuf>,
        source: std::io::Error,
    },
    /// Neither a torch zip archive nor a safetensors file (empty, torch's legacy
    /// format, anything else).
    UnknownFormat { path: Option<PathBuf>, message: String },
    /// A torch archive or safetensors file the reader refuses: truncated or damaged,
    /// beyond a limit, or naming what a checkpoint never needs. `message` says where.
    Invalid {
        path: Option<PathBuf>,
        format: Format,
        message: String,
    },
}

impl Error {
    fn at(mut self, file: &Path) -> Self {
        let (Error::Io { path, .. } | Error::UnknownFormat { path, .. } | Error::Invalid { path, .. }) = &mut self;
        *path = Some(file.to_path_buf());
        self
    }

    /// The file the error is about (`None` for [`load_bytes`]).
    pub fn path(&self) -> Option<&Path> {
        let (Error::Io { path, .. } | Error::UnknownFormat { path, .. } | Error::Invalid { path, .. }) = self;
        path.as_deref()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.path() {
            write!(f, "{}: ", p.display())?;
        }
        match self {
            Error::Io { source, .. } => write!(f, "cannot open: {source}"),
            Error::UnknownFormat { message, .. } | Error::Invalid { message, .. } => f.write_str(message),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn load_input(input: Input, progress: &mut dyn FnMut(u64, u64)) -> Result<Checkpoint, Error> {
    let head = input.head(16).map_err(|source| Error::Io { path: None, source })?;
    let format = sniff(&head).map_err(|message| Error::UnknownFormat { path: None, message })?;
    let read = match format {
        Format::Torch => torch::load(input, progress),
        Format::Safetensors => safetensors::load(input, progress),
    };
    read.map_err(|e| Error::Invalid {
        path: None,
        format,
        message: format!("{e:#}"),
    })
}

/// The format a file's first 16 bytes announce, or why they announce none.
fn sniff(head: &[u8]) -> Result<Format, String> {
    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
        return Ok(Format::Torch);
    }
    if head.is_empty() {
        return Err("the file is empty".into());
    }
    if head.starts_with(&[0x80, 0x02, 0x8a, 0x0a]) {
        return Err(
            "this is torch's legacy (pre-1.6) serialization format, which is not supported; \
             re-save it with a current torch, or convert it to safetensors"
                .into(),
        );
    }
    // safetensors: a little-endian u64 header length, then '{'. A plausible
    // length (under 2^40) without the '{' is still treated as safetensors, so
    // that a damaged header gets a precise error.
    if head.len() >= 9 && (head[8] == b'{' || head[5..8] == [0, 0, 0]) {
        return Ok(Format::Safetensors);
    }
    let shown: String = head.iter().map(|b| format!("{b:02x}")).collect();
    Err(format!(
        "neither a torch zip archive (which starts with \"PK\") nor a safetensors file (an 8-byte \
         header length, then '{{'); it starts with {shown}"
    ))
}

/// The readers on bytes in memory, for the fuzz targets (`fuzz/` at the repository root).
/// Each returns whether the input was accepted; errors are the expected outcome.
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use super::{Input, safetensors, torch};

    /// The restricted unpickler and the interpretation of `data.pkl` (state dict,
    /// hyper-parameters).
    pub fn pickle(data: &[u8]) -> bool {
        torch::read_pickle(data).is_ok()
    }

    /// A torch zip archive: the zip reader, `data.pkl`, the storage records.
    pub fn torch_zip(data: &[u8]) -> bool {
        torch::load(Input::Bytes(data), &mut |_, _| {}).is_ok()
    }

    /// A safetensors file: header length, JSON header, tensor data.
    pub fn safetensors(data: &[u8]) -> bool {
        safetensors::load(Input::Bytes(data), &mut |_, _| {}).is_ok()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_support::{TempFile, golden};

    /// The error loading `t`, which must name the file.
    pub(crate) fn load_err(t: &TempFile) -> String {
        let e = format!("{:#}", load(&t.path, &mut |_, _| {}).unwrap_err());
        assert!(
            e.contains(&t.path.display().to_string()),
            "error does not name the file: {e}"
        );
        e
    }

    fn sha256_hex(path: &Path) -> String {
        use sha2::{Digest, Sha256};
        let d = Sha256::digest(std::fs::read(path).unwrap());
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn training_only_keys() {
        for k in [
            "image_discriminator.model0.0.weight",
            "video_discriminator.model0.0.weight",
            "perceptual_model.lin0.model.1.weight",
            "codebook.N",
            "codebook.z_avg",
            "codebook.codebook_usage",
        ] {
            assert!(is_training_only(k), "{k}");
        }
        for k in [
            "codebook.embeddings",
            "codebook.Nx",
            "encoder.image_discriminator.x",
            "image_discriminator",
            "pre_vq_conv.weight",
        ] {
            assert!(!is_training_only(k), "{k}");
        }
    }

    #[test]
    fn golden_ckpt_and_safetensors_are_bit_identical() {
        let (Some(ckpt), Some(st)) = (golden("rope_vq.ckpt"), golden("rope_vq.weights.safetensors")) else {
            return;
        };
        let mut last = (0, 0);
        let t0 = std::time::Instant::now();
        let a = load(&ckpt, &mut |d, n| last = (d, n)).unwrap();
        let took = t0.elapsed();
        let len = std::fs::metadata(&ckpt).unwrap().len();
        assert_eq!(last, (len, len));
        let b = load(&st, &mut |_, _| {}).unwrap();
        println!("rope_vq.ckpt loaded in {took:?}");

        assert_eq!(a.skipped, 6);
        assert_eq!(b.skipped, 3);
        assert!(a.tensors.len() > 300);
        assert_eq!(
            a.tensors.keys().collect::<Vec<_>>(),
            b.tensors.keys().collect::<Vec<_>>()
        );
        for (k, ta) in &a.tensors {
            let tb = &b.tensors[k];
            assert!(!is_training_only(k));
            assert_eq!(ta.shape, tb.shape, "{k}");
            assert_eq!(ta.dtype, tb.dtype, "{k}");
            assert_eq!(ta.data.len(), ta.shape.iter().product::<usize>(), "{k}");
            match (&ta.data, &tb.data) {
                (TensorData::F32(x), TensorData::F32(y)) => {
                    let xb: Vec<u32> = x.iter().map(|v| v.to_bits()).collect();
                    let yb: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
                    assert!(xb == yb, "{k}: f32 bits differ");
                }
                (TensorData::I64(x), TensorData::I64(y)) => assert_eq!(x, y, "{k}"),
                _ => panic!("{k}: data kinds differ"),
            }
        }
        let emb = &a.tensors["codebook.embeddings"];
        assert_eq!(emb.shape, [8192, 8]);
        assert_eq!(emb.dtype, DType::F32);
        let rpi = &a.tensors["encoder.enc_spatial_transformer.layers.2.1.relative_position_index"];
        assert_eq!((rpi.dtype, &rpi.shape[..]), (DType::I64, &[64, 64][..]));

        assert_eq!(a.sha256, sha256_hex(&ckpt));
        assert_eq!(b.sha256, sha256_hex(&st));
        assert!(b.hyper_parameters.is_none());
    }

    fn hp(name: &str) -> Option<BTreeMap<String, HyperValue>> {
        let path = golden(name)?;
        let ck = load(&path, &mut |_, _| {}).unwrap();
        assert_eq!(ck.skipped, 6, "{name}");
        Some(ck.hyper_parameters.expect("hyper_parameters"))
    }

    #[test]
    fn golden_hyper_parameters() {
        use HyperValue::{Bool, Float, Int, Str};
        let Some(vq) = hp("rope_vq.ckpt") else {
            return;
        };
        assert_eq!(vq["embedding_dim"], Int(128));
        assert_eq!(vq["heads"], Int(2));
        assert_eq!(vq["dim_head"], Int(64));
        assert_eq!(vq["spatial_pos"], Str("rope".into()));
        assert_eq!(vq["casual_in_peg"], Bool(true));
        assert_eq!(vq["casual_in_temporal_transformer"], Bool(true));
        assert_eq!(vq["use_vae"], Bool(false));
        assert_eq!(vq["enc_block"], Str("ttww".into()));
        assert_eq!(vq["dec_block"], Str("tttt".into()));
        assert_eq!(vq["twod_window_size"], Int(8));
        assert_eq!(vq["temporal_patch_size"], Int(4));
        assert_eq!(vq["n_codes"], Int(8192));
        assert_eq!(vq["ff_mult"], Float(4.0));
        assert_eq!(vq.len(), 30);
        assert!(!vq.contains_key("args"));

        let vae = hp("rope_vae.ckpt").unwrap();
        assert_eq!(vae["use_vae"], Bool(true));
        assert_eq!(vae["spatial_pos"], Str("rope".into()));

        let rel = hp("rel_vq.ckpt").unwrap();
        assert_eq!(rel["embedding_dim"], Int(128));
        assert_eq!(rel["temporal_patch_size"], Int(2));
        assert_eq!(rel["resolution"], Int(64));
        for missing in ["spatial_pos", "twod_window_size", "use_vae"] {
            assert!(!rel.contains_key(missing), "{missing}");
        }
        // rel_vq.ckpt spells these flags with "causal_" (unlike the rope_* files).
        assert_eq!(rel["causal_in_peg"], Bool(true));
        assert_eq!(rel["causal_in_temporal_transformer"], Bool(true));
    }

    #[test]
    fn fuzz_seeds_are_valid_inputs() {
        // The committed seed corpus of fuzz/ (fuzz/seeds/make_seeds.py) reads cleanly,
        // so the fuzzers start from inputs that reach every stage of the readers.
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
        let files = |target: &str| -> Vec<(PathBuf, Vec<u8>)> {
            let mut v: Vec<_> = std::fs::read_dir(seeds.join(target))
                .unwrap()
                .map(|e| e.unwrap().path())
                .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
                .collect();
            v.sort();
            assert!(v.len() >= 2, "{target}: {v:?}");
            v
        };
        for (path, data) in files("pickle") {
            torch::read_pickle(&data).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
        }
        for target in ["torch_zip", "safetensors"] {
            for (path, data) in files(target) {
                let ck = load_bytes(&data).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                assert!(!ck.tensors.is_empty(), "{}", path.display());
            }
        }
        let ck = load_bytes(&std::fs::read(seeds.join("torch_zip/lightning.ckpt")).unwrap()).unwrap();
        let hp = ck.hyper_parameters.unwrap();
        assert_eq!(hp["embedding_dim"], HyperValue::Int(32));
        assert_eq!(
            ck.tensors["encoder.proj.t"].data,
            TensorData::F32(vec![-2.0, -0.125, 0.5, 7.0])
        );
    }

    #[test]
    fn errors_say_their_kind_and_file() {
        let e = load(Path::new("/nonexistent/x.ckpt"), &mut |_, _| {}).unwrap_err();
        assert!(matches!(&e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound));
        assert_eq!(e.path(), Some(Path::new("/nonexistent/x.ckpt")));
        assert!(std::error::Error::source(&e).is_some());
        let t = TempFile::with("text.bin", b"hello, I am not a checkpoint");
        assert!(matches!(
            load(&t.path, &mut |_, _| {}),
            Err(Error::UnknownFormat { .. })
        ));
        let e = load_bytes(b"PK\x03\x04 not really a zip archive").unwrap_err();
        assert!(
            matches!(
                e,
                Error::Invalid {
                    format: Format::Torch,
                    path: None,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().starts_with("it starts like a zip archive"), "{e}");
        let e = load_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{x").unwrap_err();
        assert!(
            matches!(
                e,
                Error::Invalid {
                    format: Format::Safetensors,
                    ..
                }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn unrecognised_files_are_clear_errors() {
        let cases: &[(&str, &[u8], &str)] = &[
            ("empty.bin", b"", "the file is empty"),
            (
                "garbage.bin",
                b"hello, I am not a checkpoint",
                "neither a torch zip archive",
            ),
            ("legacy.pt", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.", "legacy"),
            ("short.safetensors", b"\x02\x00", "neither"),
        ];
        for (name, bytes, want) in cases {
            let t = TempFile::with(name, bytes);
            let e = format!("{:#}", load(&t.path, &mut |_, _| {}).unwrap_err());
            assert!(e.contains(want), "{name}: {e}");
            assert!(e.starts_with(&t.path.display().to_string()), "{name}: {e}");
        }
        let e = load(Path::new("/nonexistent/x.ckpt"), &mut |_, _| {}).unwrap_err();
        assert!(e.to_string().starts_with("/nonexistent/x.ckpt: cannot open"), "{e}");
    }
}
