//! `omnitokdec`: turns an omnitok token stream (`video/x-omnitok`: VQ tokens or VAE
//! latents, from omnitokparse or omnitokenc) back into RGB video with the decoder graph
//! `decoder.onnx` written by `omnitok-export`, run by ONNX Runtime.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct OmnitokDec(ObjectSubclass<imp::OmnitokDec>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    // Rank NONE: the element needs a model-file, so it is never auto-plugged.
    gst::Element::register(Some(plugin), "omnitokdec", gst::Rank::NONE, OmnitokDec::static_type())
}
