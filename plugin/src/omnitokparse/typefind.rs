//! A typefinder for token streams: `OMNITOK\0` at offset 0 (docs/FORMAT.md, section 3), so
//! that `typefind` / `decodebin` recognise token files and plug `omnitokparse`.

use gst::glib;

use crate::caps::MEDIA_TYPE;
use crate::format::{MAGIC, VERSION};

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    let caps = gst::Caps::builder(MEDIA_TYPE).build();
    gst::TypeFind::register(
        Some(plugin),
        "video/x-omnitok",
        gst::Rank::PRIMARY,
        Some("omnitok,otk"),
        Some(&caps),
        |tf| {
            let Some(head) = tf.peek(0, MAGIC.len() as u32) else {
                return;
            };
            if head != MAGIC {
                return;
            }
            // The magic is 8 bytes with a NUL: conclusive. Report the version when present
            // (a newer version is still a token stream; omnitokparse then says it is
            // unsupported instead of the pipeline failing to find a type).
            let version = tf
                .peek(8, 2)
                .map(|v| u16::from_le_bytes([v[0], v[1]]))
                .unwrap_or(VERSION);
            let caps = gst::Caps::builder(MEDIA_TYPE)
                .field("version", i32::from(version))
                .build();
            tf.suggest(gst::TypeFindProbability::Maximum, &caps);
        },
    )
}
