//! The OmniTokenizer model, traced into ONNX graphs through the typed operators of
//! [`crate::graph`]. One file per group of official modules
//! (`OmniTokenizer/omnitokenizer.py`, `OmniTokenizer/modules/attention.py`), structs
//! named like the PyTorch modules; `vqgan` is `VQGAN.encode`/`VQGAN.decode`, the
//! graphs' inputs and outputs.
//!
//! Layout inside the graphs: tokens are channels-last (`[b, t, h, w, d]`), frames are
//! `[B, F, H, W, 3]` as `video/x-raw,format=RGB` buffers hold them.
//!
//! Every module keeps its [`ModulePath`]: its weights are the state-dict keys under it
//! and its nodes are named in its scope (`encoder/enc_spatial_transformer/layers.0/1/to_q/MatMul`).

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
pub mod vqgan;
pub mod window_attention;

use std::fmt;

use anyhow::Result;

use crate::config::{AttentionSemantics, Config};
use crate::graph::{Dim, Graph, Value};
use crate::weights::Weights;

/// What every module needs while tracing.
pub struct Ctx<'a> {
    pub g: &'a mut Graph,
    pub w: &'a Weights,
    pub cfg: &'a Config,
    pub semantics: AttentionSemantics,
}

impl Ctx<'_> {
    /// Runs `f` with the nodes named in `path`'s scope.
    pub fn enter<T>(&mut self, path: &ModulePath, f: impl FnOnce(&mut Self) -> T) -> T {
        let outer = self.g.replace_scope(path.0.clone());
        let out = f(self);
        self.g.replace_scope(outer);
        out
    }

    /// The float weight `name` of the module at `path`, which must have `shape`, as
    /// an initializer named by its state-dict key.
    pub fn param(&mut self, path: &ModulePath, name: &str, shape: &[usize]) -> Result<Value> {
        let key = path.key(name);
        let data = self.w.get(&key, shape)?;
        let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
        self.g.initializer_f32(&key, &dims, &data)
    }
}

/// A module's place in the official model, e.g. `encoder.enc_spatial_transformer.layers.0.1`.
/// The one name of both its weights (`path.key("to_q.weight")` is the state-dict key
/// `encoder.enc_spatial_transformer.layers.0.1.to_q.weight`) and its nodes' scope
/// (`encoder/enc_spatial_transformer/layers.0/1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModulePath(Vec<String>);

impl ModulePath {
    /// A top-level attribute of the official `VQGAN` (`encoder`, `codebook`,
    /// `pre_vq_conv`), or a step of its own forward (`preprocess`).
    pub fn top(name: &str) -> Self {
        ModulePath(vec![name.to_string()])
    }

    /// The attribute or `nn.Sequential` slot `name` of this module.
    pub fn child(&self, name: impl fmt::Display) -> Self {
        let mut parts = self.0.clone();
        parts.push(name.to_string());
        ModulePath(parts)
    }

    /// Item `i` of this module's `nn.ModuleList` attribute `list` (`layers.0`: one
    /// scope, as torch names it).
    pub fn item(&self, list: &str, i: usize) -> Self {
        self.child(format!("{list}.{i}"))
    }

    /// The state-dict key of `name` (a weight, or a dotted path below) in this module.
    pub fn key(&self, name: &str) -> String {
        format!("{self}.{name}")
    }
}

impl fmt::Display for ModulePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
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

impl VideoShape {
    /// The grid of channels-last tokens `[b, t, h, w, d]`.
    pub fn of(tokens: &Value) -> Self {
        VideoShape {
            b: tokens.dim(0),
            t: tokens.dim(1),
            h: tokens.dim(2),
            w: tokens.dim(3),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ModulePath;

    #[test]
    fn one_path_names_weights_and_scope() {
        let p = ModulePath::top("encoder")
            .child("enc_spatial_transformer")
            .item("layers", 2)
            .child(1);
        assert_eq!(
            p.key("to_q.weight"),
            "encoder.enc_spatial_transformer.layers.2.1.to_q.weight"
        );
        assert_eq!(p.0, ["encoder", "enc_spatial_transformer", "layers.2", "1"]);
        assert_eq!(p.to_string(), "encoder.enc_spatial_transformer.layers.2.1");
    }
}
