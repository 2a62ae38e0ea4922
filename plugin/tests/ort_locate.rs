//! Probing ONNX Runtime candidates: a usable library gives its version; a missing file, a
//! library that is not ONNX Runtime, and a too-old one are refused with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;

use gstomnitok::runtime::locate::{MIN_VERSION, PRIVATE_DIR, candidates, own_file, probe};

mod support;

fn scratch() -> PathBuf {
    support::scratch("ort-locate")
}

#[test]
fn the_project_local_library_is_usable() {
    let lib = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deps/onnxruntime/libonnxruntime.so"));
    let version = probe(&lib).unwrap_or_else(|e| panic!("{}: {e}", lib.display()));
    let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap());
    assert!(
        (parts.next().unwrap(), parts.next().unwrap()) >= MIN_VERSION,
        "{version}"
    );
}

/// The private copy beside the code's own file comes first, then ORT_DYLIB_PATH, then the
/// loader path; nothing of the build tree.
#[test]
fn candidates_start_beside_the_loaded_file() {
    let me = own_file().expect("dladdr names this test executable");
    assert_eq!(me, std::env::current_exe().unwrap().canonicalize().unwrap());
    let c = candidates();
    assert_eq!(c[0].parent().unwrap(), me.parent().unwrap().join(PRIVATE_DIR));
    assert_eq!(c.last().unwrap(), Path::new("libonnxruntime.so"));
    let env = std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from);
    if let Some(env) = &env {
        assert_eq!(&c[1], env);
    }
    // Apart from what ORT_DYLIB_PATH says, nothing points into the source tree's set-up.
    let deps = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().join(".deps");
    assert!(
        c.iter()
            .filter(|p| Some(*p) != env.as_ref())
            .all(|p| !p.starts_with(&deps)),
        "{c:?}"
    );
}

#[test]
fn missing_and_foreign_libraries_are_refused() {
    let err = probe(Path::new("/nonexistent/libonnxruntime.so")).unwrap_err();
    assert!(err.contains("no such file"), "{err}");
    let dir = scratch();
    let garbage = dir.join("libgarbage.so");
    std::fs::write(&garbage, b"not an ELF file").unwrap();
    let err = probe(&garbage).unwrap_err();
    assert!(err.contains("cannot be loaded"), "{err}");
}

/// A fake library that says it is ONNX Runtime 1.16.3 (needs a C compiler).
#[test]
fn too_old_versions_are_refused() {
    let dir = scratch();
    let src = dir.join("fake_ort.c");
    std::fs::write(
        &src,
        r#"
        static const char *version(void) { return "1.16.3"; }
        static const void *api(unsigned v) { (void)v; return 0; }
        struct base { const void *(*get_api)(unsigned); const char *(*get_version)(void); };
        static const struct base b = { api, version };
        const struct base *OrtGetApiBase(void) { return &b; }
        "#,
    )
    .unwrap();
    let so = dir.join("libonnxruntime_fake.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    match Command::new(&cc)
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&src)
        .status()
    {
        Ok(s) if s.success() => {}
        other => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but {cc} failed: {other:?}"
            );
            eprintln!("skipped: no C compiler ({other:?})");
            return;
        }
    }
    let err = probe(&so).unwrap_err();
    assert!(err.contains("1.16.3 is too old") && err.contains("1.23"), "{err}");
    // a library without OrtGetApiBase: the same object with the symbol renamed
    let other = dir.join("libnot_ort.so");
    let src2 = dir.join("not_ort.c");
    std::fs::write(&src2, "int something_else(void) { return 1; }\n").unwrap();
    assert!(
        Command::new(&cc)
            .args(["-shared", "-fPIC", "-o"])
            .arg(&other)
            .arg(&src2)
            .status()
            .unwrap()
            .success()
    );
    let err = probe(&other).unwrap_err();
    assert!(err.contains("not an ONNX Runtime library"), "{err}");
}
