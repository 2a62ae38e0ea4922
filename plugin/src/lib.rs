//! `gstomnitok`: GStreamer elements that turn video into OmniTokenizer tokens (or VAE
//! latents) and back, running ONNX graphs written by `omnitok-export` with ONNX Runtime.

use gst::glib;

pub mod caps;
pub mod chunker;
pub mod format;
pub mod meta;
mod omnitokdec;
pub mod omnitokenc;
mod omnitokparse;
pub mod runtime;

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
    concat!(env!("CARGO_PKG_VERSION"), "-", env!("OMNITOK_COMMIT")),
    "MIT/X11",
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_NAME"),
    env!("CARGO_PKG_REPOSITORY"),
    env!("OMNITOK_BUILD_DATE")
);
