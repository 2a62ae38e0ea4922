//! Stamps the plugin version with the git commit and a release date, as gst-plugins-rs does.
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=OMNITOK_COMMIT={commit}");
    println!("cargo:rustc-env=OMNITOK_BUILD_DATE=2026-11-30");
    println!("cargo:rerun-if-changed=../.git/HEAD");
}
