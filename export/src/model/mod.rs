//! The OmniTokenizer model, traced into ONNX graphs. One file per group of official
//! modules (`OmniTokenizer/omnitokenizer.py`, `OmniTokenizer/modules/attention.py`),
//! structs named like the PyTorch modules, weights addressed by the same dotted keys.
//!
//! Layout inside the graphs: tokens are channels-last (`[b, t, h, w, d]`), frames are
//! `[B, F, H, W, 3]` as `video/x-raw,format=RGB` buffers hold them.

pub mod attention;
pub mod codebook;
pub mod decoder;
pub mod encoder;
pub mod feed_forward;
pub mod nn;
pub mod patch_embed;
pub mod peg;
pub mod position;
pub mod transformer;
pub mod window_attention;

use crate::config::{AttentionSemantics, Config};
use crate::graph::{Dim, Graph};
use crate::weights::Weights;

/// What every module needs while tracing.
pub struct Ctx<'a> {
    pub g: &'a mut Graph,
    pub w: &'a Weights,
    pub cfg: &'a Config,
    pub semantics: AttentionSemantics,
}

impl Ctx<'_> {
    /// Runs `f` with `name` pushed on the node-name path (the module path).
    pub fn scoped<T>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> T) -> T {
        self.g.push_scope(name);
        let out = f(self);
        self.g.pop_scope();
        out
    }
}

/// The `(b, t, h, w)` grid a token tensor stands for (the official `video_shape`).
#[derive(Clone, Debug)]
pub struct VideoShape {
    pub b: Dim,
    pub t: Dim,
    pub h: Dim,
    pub w: Dim,
}

/// Joins a module path: `key("encoder", "to_patch_emb.2")`.
pub fn key(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}
