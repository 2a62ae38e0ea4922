//! The plugin's version (commit id) and release date, from git or Cargo.toml, as gst-plugins-rs does.

fn main() {
    gst_plugin_version_helper::info();
}
