//! `VQGAN.encode` and `VQGAN.decode`, the two graphs: their inputs and outputs, the
//! pre- and post-processing around the model (u8 frames in and out), `pre_vq_conv`,
//! the codebook or the Gaussian posterior, and `post_vq_conv`.
//!
//! Encoder graph: `frames` u8 `[batch, frames, height, width, 3]` -> `tokens` i64
//! `[batch, t, h, w]` (VQ) or `latent_mean`, `latent_logvar` f32 `[batch, channels, t, h, w]`
//! (VAE), plus `pre_quant` with intermediates. Decoder graph: `tokens` or `latent` ->
//! `frames` u8, plus `recon` (`[batch, 3, frames, height, width]`) with intermediates.
//! docs/GRAPHS.md is the contract.

use anyhow::Result;

use super::codebook::{Lookup, Quantizer};
use super::decoder::Decoder;
use super::encoder::Encoder;
use super::nn::{Linear, l2_normalize};
use super::{Ctx, ModulePath};
use crate::graph::{DType, InputDim, Value};

/// The slot of the Linear in `pre_vq_conv`/`post_vq_conv`, `nn.Sequential(Rearrange,
/// Linear, Rearrange)` (the Rearranges are the layout changes around them here).
const CONV_LINEAR: usize = 1;

/// The names of a latent's axes, `[b, c, t, h, w]`.
const LATENT_AXES: [&str; 5] = ["batch", "channels", "t", "h", "w"];

/// `b t h w c -> b c t h w`, the official latent layout.
fn to_bcthw(cx: &mut Ctx, v: &Value) -> Result<Value> {
    cx.g.transpose(v, &[0, 4, 1, 2, 3])
}

/// Traces the encoder graph: `VQGAN.encode`, from u8 frames.
pub fn trace_encode(cx: &mut Ctx, intermediates: bool) -> Result<()> {
    let cfg = cx.cfg;
    let codebook = ModulePath::top("codebook");
    if cfg.use_vae {
        // A VAE checkpoint still holds the (untrained) codebook of its VQ ancestor.
        cx.w.expect_unused(&codebook.key("embeddings"));
    }
    let c = cfg.codebook_dim as usize * if cfg.use_vae { 2 } else { 1 };
    let encoder = Encoder::load(cx, ModulePath::top("encoder"))?;
    let pre_vq_conv = ModulePath::top("pre_vq_conv");
    let pre_vq_linear = Linear::load(cx, pre_vq_conv.child(CONV_LINEAR), cfg.embedding_dim as usize, c, true)?;
    let quantizer = if cfg.use_vae {
        None
    } else {
        Some(Quantizer::load(cx, codebook)?)
    };

    let axes = ["batch", "frames", "height", "width"].map(InputDim::Named);
    let frames = cx.g.input(
        "frames",
        DType::U8,
        &[axes[0], axes[1], axes[2], axes[3], InputDim::Fixed(3)],
    )?;
    // x = u8 / 255 - 0.5
    let x = cx.enter(&ModulePath::top("preprocess"), |cx| -> Result<Value> {
        let x = cx.g.cast(&frames, DType::F32)?;
        let s = cx.g.scalar_f32(255.0)?;
        let x = cx.g.div(&x, &s)?;
        let half = cx.g.scalar_f32(0.5)?;
        cx.g.sub(&x, &half)
    })?;
    let h = encoder.forward(cx, &x)?; // b t h w d
    let z = cx.enter(&pre_vq_conv, |cx| pre_vq_linear.forward(cx, &h))?; // b t h w c
    if intermediates {
        let pq = to_bcthw(cx, &z)?;
        cx.g.output(&pq, "pre_quant", &LATENT_AXES)?;
    }
    match &quantizer {
        Some(q) => {
            let z = if cfg.l2_code {
                cx.enter(&ModulePath::top("normalize"), |cx| l2_normalize(cx, &z))?
            } else {
                z
            };
            let idx = q.forward(cx, &z)?;
            cx.g.output(&idx, "tokens", &["batch", "t", "h", "w"])
        }
        None => cx.enter(&ModulePath::top("posterior"), |cx| -> Result<()> {
            // DiagonalGaussianDistribution: mean and logvar halves, logvar clamped.
            let c = cfg.codebook_dim;
            let mean = cx.g.slice_const(&z, -1, 0, c)?;
            let logvar = cx.g.slice_const(&z, -1, c, 2 * c)?;
            let logvar = cx.g.clip(&logvar, -30.0, 20.0)?;
            let mean = to_bcthw(cx, &mean)?;
            let logvar = to_bcthw(cx, &logvar)?;
            cx.g.output(&mean, "latent_mean", &LATENT_AXES)?;
            cx.g.output(&logvar, "latent_logvar", &LATENT_AXES)
        }),
    }
}

/// Traces the decoder graph: `VQGAN.decode`, to u8 frames
/// (`round(clamp(x + 0.5, 0, 1) * 255)`).
pub fn trace_decode(cx: &mut Ctx, intermediates: bool) -> Result<()> {
    let cfg = cx.cfg;
    let lookup = if cfg.use_vae {
        None
    } else {
        Some(Lookup::load(cx, ModulePath::top("codebook"))?)
    };
    let post_vq_conv = ModulePath::top("post_vq_conv");
    let post_vq_linear = Linear::load(
        cx,
        post_vq_conv.child(CONV_LINEAR),
        cfg.codebook_dim as usize,
        cfg.embedding_dim as usize,
        true,
    )?;
    let decoder = Decoder::load(cx, ModulePath::top("decoder"))?;

    let grid = ["batch", "t", "h", "w"].map(InputDim::Named);
    let z = match &lookup {
        Some(lookup) => {
            let tokens = cx.g.input("tokens", DType::I64, &grid)?;
            lookup.forward(cx, &tokens)?
        }
        None => {
            let dims = [grid[0], InputDim::Fixed(cfg.codebook_dim), grid[1], grid[2], grid[3]];
            let latent = cx.g.input("latent", DType::F32, &dims)?;
            cx.g.transpose(&latent, &[0, 2, 3, 4, 1])?
        }
    }; // b t h w c
    let z = cx.enter(&post_vq_conv, |cx| post_vq_linear.forward(cx, &z))?;
    let x = decoder.forward(cx, &z)?; // b F H W 3

    if intermediates {
        let recon = cx.g.transpose(&x, &[0, 4, 1, 2, 3])?;
        cx.g.output(&recon, "recon", &["batch", "channels", "frames", "height", "width"])?;
    }
    let frames = cx.enter(&ModulePath::top("postprocess"), |cx| -> Result<Value> {
        let half = cx.g.scalar_f32(0.5)?;
        let y = cx.g.add(&x, &half)?;
        let y = cx.g.clip(&y, 0.0, 1.0)?;
        let s = cx.g.scalar_f32(255.0)?;
        let y = cx.g.mul(&y, &s)?;
        let y = cx.g.round(&y)?;
        cx.g.cast(&y, DType::U8)
    })?;
    cx.g.output(&frames, "frames", &["batch", "frames", "height", "width"])
}
