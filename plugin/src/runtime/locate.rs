//! Finding and loading the ONNX Runtime shared library.
//!
//! Order: `ORT_DYLIB_PATH` when set (and then only that), else the project-local
//! install that `scripts/setup.sh` makes (`.deps/onnxruntime/`), else the dynamic
//! loader's search path (`libonnxruntime.so`). Each candidate is probed for its
//! version before `ort` is initialised with it, so a missing or too-old library
//! is an error naming every path tried, never a panic.

use std::ffi::{CStr, c_char, c_void};
use std::fmt;
use std::path::{Path, PathBuf};

use once_cell::sync::OnceCell;

/// The oldest ONNX Runtime whose CPU kernels cover our graphs (opset 23 `Attention`).
pub const MIN_VERSION: (u32, u32) = (1, 23);

/// The library the elements and tests run with, once found, and the process-wide
/// ONNX Runtime environment sessions are built in.
pub struct OrtLibrary {
    pub path: PathBuf,
    pub version: String,
    pub environment: ort::environment::Environment,
}

/// Why no usable ONNX Runtime was found: one line per candidate.
#[derive(Debug, Clone)]
pub struct LocateError {
    pub tried: Vec<(PathBuf, String)>,
}

impl fmt::Display for LocateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no usable ONNX Runtime (>= {}.{}) found; set ORT_DYLIB_PATH to libonnxruntime.so or run scripts/setup.sh. Tried:",
            MIN_VERSION.0, MIN_VERSION.1
        )?;
        for (path, why) in &self.tried {
            write!(f, "\n  {}: {why}", path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for LocateError {}

/// The install that `scripts/setup.sh` makes inside the source tree this crate was built from.
pub fn project_local_library() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deps/onnxruntime/libonnxruntime.so")
}

/// The candidates in the order they are tried.
pub fn candidates() -> Vec<PathBuf> {
    match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) if !p.is_empty() => vec![PathBuf::from(p)],
        _ => vec![project_local_library(), PathBuf::from("libonnxruntime.so")],
    }
}

#[repr(C)]
struct OrtApiBase {
    get_api: unsafe extern "C" fn(u32) -> *const c_void,
    get_version_string: unsafe extern "C" fn() -> *const c_char,
}

/// Opens `path` and reads its version string without initialising anything; errors say why
/// the file is not a usable ONNX Runtime.
pub fn probe(path: &Path) -> Result<String, String> {
    if path.components().count() > 1 && !path.exists() {
        return Err("no such file".into());
    }
    // SAFETY: loading ONNX Runtime runs its (trusted) initialisers only.
    let lib = unsafe { libloading::Library::new(path) }.map_err(|e| format!("cannot be loaded ({e})"))?;
    // SAFETY: the signature is the C API's `const OrtApiBase* OrtGetApiBase(void)`.
    let base = unsafe {
        let getter: libloading::Symbol<unsafe extern "C" fn() -> *const OrtApiBase> = lib
            .get(b"OrtGetApiBase\0")
            .map_err(|_| "does not export OrtGetApiBase: not an ONNX Runtime library".to_string())?;
        getter()
    };
    if base.is_null() {
        return Err("OrtGetApiBase returned null".into());
    }
    // SAFETY: base points at a static struct inside the loaded library, which stays loaded
    // (the handle is leaked below when the probe succeeds).
    let version = unsafe { CStr::from_ptr(((*base).get_version_string)()) }
        .to_string_lossy()
        .into_owned();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if found < MIN_VERSION {
        return Err(format!(
            "version {version} is too old (need >= {}.{})",
            MIN_VERSION.0, MIN_VERSION.1
        ));
    }
    // Keep the library mapped: `ort` will dlopen the same file and share the handle.
    std::mem::forget(lib);
    Ok(version)
}

static LIBRARY: OnceCell<Result<OrtLibrary, LocateError>> = OnceCell::new();

/// Finds ONNX Runtime and initialises `ort` with it, once per process.
pub fn init() -> Result<&'static OrtLibrary, LocateError> {
    LIBRARY
        .get_or_init(|| {
            let mut tried = Vec::new();
            for path in candidates() {
                let version = match probe(&path) {
                    Ok(v) => v,
                    Err(why) => {
                        tried.push((path, why));
                        continue;
                    }
                };
                let env = ort::init_from(&path).map_err(|e| e.to_string()).and_then(|b| {
                    b.with_name("omnitok")
                        .with_telemetry(false)
                        .build()
                        .map_err(|e| e.to_string())
                });
                match env {
                    Ok(environment) => {
                        return Ok(OrtLibrary {
                            path,
                            version,
                            environment,
                        });
                    }
                    Err(e) => tried.push((path, format!("ONNX Runtime refused to start: {e}"))),
                }
            }
            Err(LocateError { tried })
        })
        .as_ref()
        .map_err(Clone::clone)
}
