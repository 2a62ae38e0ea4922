//! `omnitokenc`: raw RGB video in, OmniTokenizer token chunks (or VAE latents) out.
//!
//! Frames are padded (edge replication) to the size the model runs at, collected into
//! chunks of `chunk-frames` frames like closed GOPs, encoded by `encoder.onnx` with ONNX
//! Runtime `batch-size` chunks at a time, and pushed as `video/x-omnitok` buffers: the
//! stream header (flagged HEADER, also in the caps' `streamheader`), then one chunk record
//! per chunk (docs/FORMAT.md).

use gst::glib;
use gst::prelude::*;

mod imp;

pub use imp::LatentFormat;

glib::wrapper! {
    pub struct OmnitokEnc(ObjectSubclass<imp::OmnitokEnc>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    LatentFormat::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    crate::runtime::ExecutionProvider::static_type().mark_as_plugin_api(gst::PluginAPIFlags::empty());
    gst::Element::register(Some(plugin), "omnitokenc", gst::Rank::NONE, OmnitokEnc::static_type())
}
