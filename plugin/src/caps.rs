//! The `video/x-omnitok` caps: name, fields and their mapping to the stream header
//! (docs/FORMAT.md, section 10), in one place.

use crate::format::{
    FormatError, OLDEST_VERSION, PayloadType, StreamHeader, TokenCoding, VERSION, model_id_from_hex, model_id_to_hex,
};

pub const MEDIA_TYPE: &str = "video/x-omnitok";

/// Why caps do not describe a token stream.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CapsError {
    #[error("empty caps")]
    Empty,
    #[error("caps are {0}, not {MEDIA_TYPE}")]
    MediaType(String),
    #[error("{MEDIA_TYPE} caps lack {kind} field '{field}'")]
    Missing { field: &'static str, kind: &'static str },
    #[error("{MEDIA_TYPE} caps field '{field}' is negative ({value})")]
    Negative { field: &'static str, value: i64 },
    #[error("token stream version {0} is not supported (this build reads versions {OLDEST_VERSION} to {VERSION})")]
    Version(u32),
    #[error("unknown payload '{0}'")]
    Payload(String),
    #[error("unknown token-coding '{0}' (known: u16, packed, coded)")]
    TokenCoding(String),
    #[error(transparent)]
    Format(#[from] FormatError),
}

/// Caps carrying every header field. `streamheader` (the encoded header buffer) is added
/// by the elements that have it, as GStreamer's stream formats do.
pub fn from_header(h: &StreamHeader) -> gst::Caps {
    gst::Caps::builder(MEDIA_TYPE)
        .field("version", h.version() as i32)
        .field("model-id", model_id_to_hex(&h.model_id))
        .field("width", h.width as i32)
        .field("height", h.height as i32)
        .field("padded-width", h.padded_width as i32)
        .field("padded-height", h.padded_height as i32)
        .field("framerate", gst::Fraction::new(h.fps_n as i32, h.fps_d.max(1) as i32))
        .field("chunk-frames", h.chunk_frames as i32)
        .field("grid-t", h.grid[0] as i32)
        .field("grid-h", h.grid[1] as i32)
        .field("grid-w", h.grid[2] as i32)
        .field("channels", h.channels as i32)
        .field("codebook-size", h.codebook_size as i32)
        .field("payload", h.payload_type.caps_name())
        .field("frame-pts", h.frame_pts)
        .field("token-coding", h.token_coding.name())
        .build()
}

/// The header the caps describe (the model name is not a caps field; it comes back empty).
pub fn to_header(caps: &gst::CapsRef) -> Result<StreamHeader, CapsError> {
    let s = caps.structure(0).ok_or(CapsError::Empty)?;
    if s.name() != MEDIA_TYPE {
        return Err(CapsError::MediaType(s.name().to_string()));
    }
    let missing = |field, kind| CapsError::Missing { field, kind };
    let unsigned = |field, v: i32| u32::try_from(v).map_err(|_| CapsError::Negative { field, value: v.into() });
    let int = |f: &'static str| -> Result<u32, CapsError> {
        let v = s.get::<i32>(f).map_err(|_| missing(f, "integer"))?;
        unsigned(f, v)
    };
    let version = int("version")?;
    if !(u32::from(OLDEST_VERSION)..=u32::from(VERSION)).contains(&version) {
        return Err(CapsError::Version(version));
    }
    let id = s.get::<&str>("model-id").map_err(|_| missing("model-id", "string"))?;
    let fr = s
        .get::<gst::Fraction>("framerate")
        .map_err(|_| missing("framerate", "fraction"))?;
    let payload = s.get::<&str>("payload").map_err(|_| missing("payload", "string"))?;
    let header = StreamHeader {
        model_id: model_id_from_hex(id)?,
        width: int("width")?,
        height: int("height")?,
        padded_width: int("padded-width")?,
        padded_height: int("padded-height")?,
        fps_n: unsigned("framerate", fr.numer())?,
        fps_d: unsigned("framerate", fr.denom())?,
        chunk_frames: int("chunk-frames")?,
        grid: [int("grid-t")?, int("grid-h")?, int("grid-w")?],
        channels: int("channels")?,
        codebook_size: int("codebook-size")?,
        payload_type: PayloadType::from_caps_name(payload).ok_or_else(|| CapsError::Payload(payload.into()))?,
        model_name: String::new(),
        // Version 2; absent (false) in version 1 caps.
        frame_pts: s.get::<bool>("frame-pts").unwrap_or(false),
        // Version 3; absent (u16 / u32 tokens as they are) in older caps.
        token_coding: match s.get::<&str>("token-coding") {
            Ok(name) => TokenCoding::from_name(name).ok_or_else(|| CapsError::TokenCoding(name.into()))?,
            Err(_) => TokenCoding::Plain,
        },
    };
    header.validate()?;
    Ok(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_round_trip() {
        gst::init().unwrap();
        let h = StreamHeader {
            model_id: [0xab; 32],
            width: 250,
            height: 120,
            padded_width: 256,
            padded_height: 128,
            fps_n: 30000,
            fps_d: 1001,
            chunk_frames: 17,
            grid: [5, 16, 32],
            channels: 0,
            codebook_size: 8192,
            payload_type: PayloadType::U16,
            model_name: String::new(),
            frame_pts: false,
            token_coding: TokenCoding::Plain,
        };
        let caps = from_header(&h);
        assert_eq!(to_header(&caps).unwrap(), h);
        let vfr = StreamHeader {
            frame_pts: true,
            fps_n: 0,
            fps_d: 1,
            ..h.clone()
        };
        assert_eq!(to_header(&from_header(&vfr)).unwrap(), vfr);
        for coding in TokenCoding::ALL {
            let c = StreamHeader {
                token_coding: coding,
                ..h.clone()
            };
            let caps = from_header(&c);
            let s = caps.structure(0).unwrap();
            assert_eq!(s.get::<&str>("token-coding").unwrap(), coding.name());
            assert_eq!(s.get::<i32>("version").unwrap(), i32::from(c.version()));
            assert_eq!(to_header(&caps).unwrap(), c);
        }
        let mut bad = caps.clone();
        bad.make_mut().structure_mut(0).unwrap().set("token-coding", "zip");
        assert!(
            to_header(&bad)
                .unwrap_err()
                .to_string()
                .contains("unknown token-coding 'zip'")
        );
        // Version 1 caps (no frame-pts field) still read.
        let mut v1 = caps.clone();
        {
            let s = v1.make_mut().structure_mut(0).unwrap();
            s.set("version", 1i32);
            s.remove_field("frame-pts");
            s.remove_field("token-coding");
        }
        assert_eq!(to_header(&v1).unwrap(), h);
        let wrong = gst::Caps::builder("video/x-raw").build();
        assert!(
            to_header(&wrong)
                .unwrap_err()
                .to_string()
                .contains("not video/x-omnitok")
        );
        let mut old = caps.clone();
        old.make_mut().structure_mut(0).unwrap().set("version", 9i32);
        assert!(
            to_header(&old)
                .unwrap_err()
                .to_string()
                .contains("version 9 is not supported")
        );
    }
}
