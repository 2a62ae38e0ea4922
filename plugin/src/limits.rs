//! The stream limits both inference elements enforce (docs/FORMAT.md section 12): the
//! largest padded frame and the largest chunk, as the properties `max-frame-size` and
//! `max-chunk-pixels` of the same names, types and defaults on omnitokenc and omnitokdec,
//! checked on caps before anything is allocated for the stream.

use gst::glib;
use gst::prelude::*;

/// Default `max-frame-size`: the largest padded frame, in pixels (width x height), 4096 x
/// 2160 (DCI 4K); 8192x8192 needs it raised.
pub const DEFAULT_MAX_FRAME_SIZE: u64 = 4096 * 2160;
/// The largest `max-frame-size`: 2^32 pixels (65536 x 65536).
pub const MAX_MAX_FRAME_SIZE: u64 = 1 << 32;
/// Default `max-chunk-pixels`: chunk-frames x padded width x padded height, 17 frames of
/// 4096x2160; a chunk's frames take 3 bytes per pixel.
pub const DEFAULT_MAX_CHUNK_PIXELS: u64 = 17 * 4096 * 2160;

/// The two limit properties' values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_frame_size: u64,
    pub max_chunk_pixels: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame_size: DEFAULT_MAX_FRAME_SIZE,
            max_chunk_pixels: DEFAULT_MAX_CHUNK_PIXELS,
        }
    }
}

/// What a limit check is for, in the element's words.
#[derive(Debug, Clone, Copy)]
pub enum Use {
    Encode,
    Decode,
}

impl Use {
    fn element(self) -> &'static str {
        match self {
            Use::Encode => "omnitokenc",
            Use::Decode => "omnitokdec",
        }
    }
}

impl Limits {
    /// The two ParamSpecs; `memory` ends the max-chunk-pixels blurb with what the element
    /// holds at most.
    pub fn param_specs(what: Use, memory: &str) -> [glib::ParamSpec; 2] {
        let (accepts, other) = match what {
            Use::Encode => ("the encoder accepts", "omnitokdec"),
            Use::Decode => ("of a stream this decoder accepts", "omnitokenc"),
        };
        [
            glib::ParamSpecUInt64::builder("max-frame-size")
                .nick("Largest frame")
                .blurb(&format!(
                    "Largest frame {accepts}, in pixels of the padded frame (padded width x height); \
                     checked on caps, before anything is allocated, a larger one is an error naming \
                     this limit. Default 4096 x 2160, as {other}'s"
                ))
                .minimum(1)
                .maximum(MAX_MAX_FRAME_SIZE)
                .default_value(DEFAULT_MAX_FRAME_SIZE)
                .mutable_ready()
                .build(),
            glib::ParamSpecUInt64::builder("max-chunk-pixels")
                .nick("Largest chunk")
                .blurb(&format!(
                    "Largest chunk accepted, in padded pixels (chunk-frames x padded width x padded \
                     height, checked on caps before anything is allocated): a chunk holds 3 x \
                     max-chunk-pixels bytes at most; {memory}"
                ))
                .minimum(1)
                .default_value(DEFAULT_MAX_CHUNK_PIXELS)
                .mutable_ready()
                .build(),
        ]
    }

    /// Sets the property `name`; false when it is not one of the limits.
    pub fn set(&mut self, name: &str, value: &glib::Value) -> bool {
        match name {
            "max-frame-size" => self.max_frame_size = value.get().expect("type checked by GObject"),
            "max-chunk-pixels" => self.max_chunk_pixels = value.get().expect("type checked by GObject"),
            _ => return false,
        }
        true
    }

    /// The property `name`, when it is one of the limits.
    pub fn get(&self, name: &str) -> Option<glib::Value> {
        match name {
            "max-frame-size" => Some(self.max_frame_size.to_value()),
            "max-chunk-pixels" => Some(self.max_chunk_pixels.to_value()),
            _ => None,
        }
    }

    /// A stream of `width`x`height` frames padded to `padded` in chunks of `chunk_frames`;
    /// the error names the limit and the property that raises it.
    pub fn check(
        &self,
        what: Use,
        (width, height): (u32, u32),
        (pw, ph): (u32, u32),
        chunk_frames: u32,
    ) -> Result<(), String> {
        let element = what.element();
        let frame = u64::from(pw) * u64::from(ph);
        if frame > self.max_frame_size {
            let verb = match what {
                Use::Encode => "encode",
                Use::Decode => "decode",
            };
            return Err(format!(
                "frame size {width}x{height} (padded {pw}x{ph} = {frame} pixels) exceeds max-frame-size = {} \
                 pixels: raise {element}'s max-frame-size property (up to {MAX_MAX_FRAME_SIZE}) to {verb} \
                 larger frames",
                self.max_frame_size
            ));
        }
        let pixels = u64::from(chunk_frames).saturating_mul(frame);
        if pixels > self.max_chunk_pixels {
            let remedy = match what {
                Use::Encode => " (or lower chunk-frames)",
                Use::Decode => " to decode them",
            };
            return Err(format!(
                "{chunk_frames} frames of {pw}x{ph} per chunk are {pixels} pixels, more than \
                 max-chunk-pixels {}: set {element}'s max-chunk-pixels property{remedy}",
                self.max_chunk_pixels
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_the_property_and_the_element() {
        let l = Limits::default();
        assert!(l.check(Use::Decode, (3840, 2160), (3840, 2176), 17).is_ok());
        let e = l.check(Use::Decode, (8192, 8192), (8192, 8192), 5).unwrap_err();
        assert!(
            e.contains("exceeds max-frame-size = 8847360 pixels") && e.contains("omnitokdec's"),
            "{e}"
        );
        let small = Limits {
            max_frame_size: 960,
            max_chunk_pixels: 4799,
        };
        let e = small.check(Use::Encode, (40, 24), (40, 24), 5).unwrap_err();
        assert!(
            e.contains("5 frames of 40x24 per chunk are 4800 pixels, more than max-chunk-pixels 4799"),
            "{e}"
        );
        assert!(
            e.contains("omnitokenc's max-chunk-pixels property (or lower chunk-frames)"),
            "{e}"
        );
        // no overflow at the extremes
        assert!(
            l.check(Use::Encode, (u32::MAX, u32::MAX), (u32::MAX, u32::MAX), u32::MAX)
                .is_err()
        );
    }
}
