//! `omnitokparse`: frames a byte stream of the omnitok token format (docs/FORMAT.md) into
//! one buffer per unit (stream header, then one per chunk record) with timestamps and
//! `video/x-omnitok, parsed=true` caps taken from the stream header.

use gst::glib;
use gst::prelude::*;

mod imp;
pub mod typefind;

glib::wrapper! {
    pub struct OmnitokParse(ObjectSubclass<imp::OmnitokParse>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    typefind::register(plugin)?;
    gst::Element::register(
        Some(plugin),
        "omnitokparse",
        gst::Rank::PRIMARY,
        OmnitokParse::static_type(),
    )
}
