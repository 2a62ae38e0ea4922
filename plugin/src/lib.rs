//! `gstomnitok`: GStreamer elements that turn video into OmniTokenizer tokens (or VAE
//! latents) and back, running ONNX graphs written by `omnitok-export` with ONNX Runtime.

use gst::glib;

pub mod caps;
pub mod chunker;
pub mod dechunker;
pub mod format;
pub mod limits;
pub mod meta;
mod omnitokdec;
pub mod omnitokenc;
mod omnitokparse;
mod pads;
pub mod runtime;
pub mod stream_map;
pub mod timebase;
mod worker;

fn plugin_init(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    meta::register();
    omnitokenc::register(plugin)?;
    omnitokparse::register(plugin)?;
    omnitokdec::register(plugin)?;
    Ok(())
}

gst::plugin_define!(
    omnitok,
    env!("CARGO_PKG_DESCRIPTION"),
    plugin_init,
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("COMMIT_ID")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("BUILD_REL_DATE")
);
