//! What the export crate's tests share: the golden data, scratch space, the Python with
//! the `onnx` checker, and exporting a preset with random weights. The integration tests
//! (`mod support;`) and the unit tests (`lib.rs` includes this file as `test_support`)
//! use this one copy.
#![allow(dead_code)] // each test crate uses a part

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Skips (returns `None` after saying why), or fails under `CI=true`.
fn missing<T>(what: std::fmt::Arguments) -> Option<T> {
    assert!(!ci(), "CI=true but {what}");
    eprintln!("skipped: {what}");
    None
}

/// The golden parity data: `$OMNITOK_GOLDEN_DIR`, else `shared/golden` beside the
/// checkout (`../shared/golden` from the workspace root).
pub fn golden_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("OMNITOK_GOLDEN_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden"),
    };
    if dir.join("cases.json").is_file() {
        Some(dir)
    } else {
        missing(format_args!(
            "golden parity data not found at {} (set OMNITOK_GOLDEN_DIR)",
            dir.display()
        ))
    }
}

/// A file of the golden data (see [`golden_dir`]).
pub fn golden(name: &str) -> Option<PathBuf> {
    Some(golden_dir()?.join(name))
}

/// `$OMNITOK_PYTHON`, a Python with the `onnx` package (and `onnxruntime`).
pub fn python() -> Option<OsString> {
    std::env::var_os("OMNITOK_PYTHON").or_else(|| missing(format_args!("OMNITOK_PYTHON is not set")))
}

/// A fresh, empty folder in the temp dir, unique to the process and the call; removed
/// with everything in it when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        static COUNT: AtomicUsize = AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "omnitok-export-test-{}-{n}-{}",
            std::process::id(),
            name.replace('/', "-")
        ));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `bytes` to `name` in the folder; returns its path.
    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.join(name);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One file in its own [`Scratch`] folder, gone when dropped.
pub struct TempFile {
    pub path: PathBuf,
    _dir: Scratch,
}

impl TempFile {
    pub fn with(name: &str, bytes: &[u8]) -> Self {
        let dir = Scratch::new(name);
        TempFile {
            path: dir.file(name, bytes),
            _dir: dir,
        }
    }
}

/// A torch zip archive of `records` (name, bytes), stored uncompressed as `torch.save`
/// writes them; a checkpoint's records are `<name>/data.pkl`, `<name>/data/<key>`, ...
pub fn torch_archive(records: &[(&str, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    use zip::write::{SimpleFileOptions, ZipWriter};
    let mut zip = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in records {
        zip.start_file(*name, stored).unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// Exports `preset` with seeded random weights into a fresh scratch folder
/// (`encoder.onnx`, `decoder.onnx`).
pub fn export_preset(preset: &str, seed: u64, intermediates: bool) -> Scratch {
    let dir = Scratch::new(&format!("{preset}-{seed}"));
    omnitok_export::write_random_preset(preset, seed, intermediates, dir.path())
        .unwrap_or_else(|e| panic!("exporting preset {preset}: {e:#}"));
    dir
}
