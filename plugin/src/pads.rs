//! The pad set-up the three elements share: "sink" and "src" templates, and pads built from
//! them whose functions catch panics (a panic becomes an error, not an abort) and call the
//! element's own handlers.

use gst::prelude::*;
use gst::subclass::prelude::*;

/// The element's "sink" and "src" pad templates (always present).
pub(crate) fn templates(sink: &gst::Caps, src: &gst::Caps) -> Vec<gst::PadTemplate> {
    let t = |name, dir, caps| gst::PadTemplate::new(name, dir, gst::PadPresence::Always, caps).unwrap();
    vec![
        t("sink", gst::PadDirection::Sink, sink),
        t("src", gst::PadDirection::Src, src),
    ]
}

type Chain<T> = fn(&T, &gst::Pad, gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError>;
type Event<T> = fn(&T, &gst::Pad, gst::Event) -> bool;
type Query<T> = fn(&T, &gst::Pad, &mut gst::QueryRef) -> bool;

/// A pad from `template` whose chain, event and query functions call the element `T`'s
/// handlers (`None`: GStreamer's default); src pads get fixed caps.
pub(crate) fn build<T: ElementImpl>(
    template: &gst::PadTemplate,
    chain: Option<Chain<T>>,
    event: Option<Event<T>>,
    query: Option<Query<T>>,
) -> gst::Pad {
    let mut b = gst::Pad::builder_from_template(template);
    if let Some(f) = chain {
        b = b.chain_function(move |pad, parent, buffer| {
            T::catch_panic_pad_function(parent, || Err(gst::FlowError::Error), |imp| f(imp, pad, buffer))
        });
    }
    if let Some(f) = event {
        b = b.event_function(move |pad, parent, event| {
            T::catch_panic_pad_function(parent, || false, |imp| f(imp, pad, event))
        });
    }
    if let Some(f) = query {
        b = b.query_function(move |pad, parent, query| {
            T::catch_panic_pad_function(parent, || false, |imp| f(imp, pad, query))
        });
    }
    if template.direction() == gst::PadDirection::Src {
        b = b.flags(gst::PadFlags::FIXED_CAPS);
    }
    b.build()
}

/// Adds the element's pads (in `constructed`).
pub(crate) fn add<T: ElementImpl>(imp: &T, pads: &[&gst::Pad]) {
    for pad in pads {
        imp.obj().add_pad(*pad).unwrap();
    }
}
