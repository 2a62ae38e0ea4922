//! Support for the workspace tests and examples: the golden parity data, the sample
//! videos, ONNX Runtime set-up, exporting models on the fly and running them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use ndarray::{ArrayD, IxDyn};
use ort::session::Session;

/// The checkout's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// A scratch folder inside the ignored `target/` tree.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = root().join("target").join("omnitok-tests").join(name);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `OMNITOK_GOLDEN_DIR`, default `../shared/golden`. `None` (after printing why) when it
/// is missing, except under `CI=true`, where a missing golden dir fails the test.
pub fn golden_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("OMNITOK_GOLDEN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/golden"));
    if dir.join("cases.json").is_file() {
        return Some(dir);
    }
    if ci() {
        panic!(
            "CI=true but the golden parity data is missing at {} (set OMNITOK_GOLDEN_DIR)",
            dir.display()
        );
    }
    eprintln!(
        "skipped: golden parity data not found at {} (set OMNITOK_GOLDEN_DIR)",
        dir.display()
    );
    None
}

/// A sample video fetched by `scripts/setup.sh` (`bikes.mp4`, `carphone_pristine.mp4`, `bigbuckbunny.mp4`).
pub fn sample_video(name: &str) -> PathBuf {
    let p = root().join(".deps/videos").join(name);
    assert!(p.is_file(), "{} is missing: run scripts/setup.sh", p.display());
    p
}

/// Initialises ONNX Runtime once (panics with the list of paths tried when it cannot).
pub fn init_ort() {
    if let Err(e) = gstomnitok::runtime::init() {
        panic!("{e}");
    }
}

/// A CPU session on `path`.
pub fn session(path: &Path) -> Result<Session> {
    init_ort();
    Ok(gstomnitok::runtime::cpu_session(path, 2)?)
}

/// Tensors of a safetensors file, widened to what tests compare.
pub struct TensorFile {
    pub f32: HashMap<String, ArrayD<f32>>,
    pub i64: HashMap<String, ArrayD<i64>>,
    pub u8: HashMap<String, ArrayD<u8>>,
}

impl TensorFile {
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let st =
            safetensors::SafeTensors::deserialize(&bytes).with_context(|| format!("parsing {}", path.display()))?;
        let mut out = TensorFile {
            f32: HashMap::new(),
            i64: HashMap::new(),
            u8: HashMap::new(),
        };
        for (name, view) in st.tensors() {
            let shape = IxDyn(view.shape());
            let data = view.data();
            match view.dtype() {
                safetensors::Dtype::F32 => {
                    let v = le_values(data, f32::from_le_bytes);
                    out.f32.insert(name, ArrayD::from_shape_vec(shape, v)?);
                }
                safetensors::Dtype::I64 => {
                    let v = le_values(data, i64::from_le_bytes);
                    out.i64.insert(name, ArrayD::from_shape_vec(shape, v)?);
                }
                safetensors::Dtype::U8 => {
                    out.u8.insert(name, ArrayD::from_shape_vec(shape, data.to_vec())?);
                }
                other => anyhow::bail!("{}: tensor {name} has unexpected dtype {other:?}", path.display()),
            }
        }
        Ok(out)
    }
}

/// Little-endian values of `N` bytes each.
fn le_values<T, const N: usize>(data: &[u8], from: fn([u8; N]) -> T) -> Vec<T> {
    data.chunks_exact(N).map(|c| from(c.try_into().unwrap())).collect()
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape(), "shape mismatch");
    a.iter().zip(b.iter()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Exports a preset with seeded random weights into a scratch folder (always afresh, so
/// tests never run a graph from an older exporter).
pub fn export_preset(preset: &str, seed: u64, intermediates: bool) -> Result<PathBuf> {
    let dir = scratch_dir(&format!(
        "models/{preset}-{seed}{}-{}",
        if intermediates { "-int" } else { "" },
        std::process::id()
    ));
    omnitok_export::write_random_preset(preset, seed, intermediates, &dir)?;
    Ok(dir)
}
