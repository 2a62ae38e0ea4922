//! Finding and loading the ONNX Runtime shared library.
//!
//! Order: the private copy installed beside the plugin (`omnitok/libonnxruntime.so.*` in the
//! folder holding the plugin's own file, which `meson install` fills), then `ORT_DYLIB_PATH`
//! when set, then the dynamic loader's search path (`libonnxruntime.so`). No path of the
//! build tree is compiled in. Each candidate is probed for its version before `ort` is
//! initialised with it, so a missing or too-old library is an error naming every path
//! tried, never a panic.

use std::ffi::{CStr, OsStr, c_char, c_void};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
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
            "no usable ONNX Runtime (>= {}.{}) found; install it beside the plugin (meson install does), or set ORT_DYLIB_PATH to libonnxruntime.so (source scripts/env.sh in a checkout). Tried:",
            MIN_VERSION.0, MIN_VERSION.1
        )?;
        for (path, why) in &self.tried {
            write!(f, "\n  {}: {why}", path.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for LocateError {}

/// The folder, beside the plugin's own file, where `meson install` puts ONNX Runtime.
pub const PRIVATE_DIR: &str = "omnitok";

/// The file this code was loaded from: `libgstomnitok.so` for the plugin, the executable
/// when the crate is linked statically (tests, examples).
pub fn own_file() -> Option<PathBuf> {
    // SAFETY: dladdr only reads the loader's tables; `info` is plain data it fills in.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let addr = own_file as fn() -> Option<PathBuf> as *const c_void;
    if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
    let name = unsafe { CStr::from_ptr(info.dli_fname) };
    Path::new(OsStr::from_bytes(name.to_bytes())).canonicalize().ok()
}

/// The private copy beside the plugin: the highest-versioned `libonnxruntime.so.*` in
/// `<plugin folder>/omnitok/` (the versioned name keeps GStreamer's registry scan, which
/// only opens `*.so` files, away from it), or that folder's `libonnxruntime.so.<none>`
/// placeholder path when there is none, so the error can name where it looked.
pub fn private_library() -> Option<PathBuf> {
    let dir = own_file()?.parent()?.join(PRIVATE_DIR);
    let mut found: Vec<PathBuf> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libonnxruntime.so."))
        })
        .collect();
    found.sort_by_key(|p| version_key(p));
    Some(found.pop().unwrap_or_else(|| dir.join("libonnxruntime.so.*")))
}

/// `libonnxruntime.so.1.32.0` -> [1, 32, 0], so that 1.100 sorts after 1.32.
fn version_key(path: &Path) -> Vec<u32> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.trim_start_matches("libonnxruntime.so.")
        .split('.')
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// The candidates in the order they are tried.
pub fn candidates() -> Vec<PathBuf> {
    let mut c: Vec<PathBuf> = private_library().into_iter().collect();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        c.push(PathBuf::from(p));
    }
    c.push(PathBuf::from("libonnxruntime.so"));
    c
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
