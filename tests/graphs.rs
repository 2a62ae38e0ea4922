//! The exported graphs' contract when run directly: any batch, clip length and frame size
//! the model allows (square or not) works; frame counts or sizes it cannot take are errors
//! from ONNX Runtime, never a crash or silent garbage.

use ndarray::{Array, ArrayD, IxDyn};
use omnitok::{export_preset, session};
use ort::value::Tensor;

fn frames(b: usize, f: usize, h: usize, w: usize) -> ArrayD<u8> {
    Array::from_shape_fn(IxDyn(&[b, f, h, w, 3]), |i| {
        ((i[1] * 31 + i[2] * 7 + i[3] * 3 + i[4] * 50) % 256) as u8
    })
}

#[test]
fn one_graph_serves_every_valid_shape() {
    let dir = export_preset("tiny", 11, false).unwrap();
    let mut enc = session(&dir.join("encoder.onnx")).unwrap();
    let mut dec = session(&dir.join("decoder.onnx")).unwrap();
    // tiny: patch 4, window 2 (sizes multiple of 8), temporal patch 2
    for (b, f, h, w) in [(1, 1, 8, 8), (2, 5, 16, 24), (1, 9, 40, 16), (3, 3, 24, 24)] {
        let out = enc
            .run(ort::inputs!["frames" => Tensor::from_array(frames(b, f, h, w)).unwrap()])
            .unwrap();
        let tokens = out["tokens"].try_extract_array::<i64>().unwrap().to_owned();
        assert_eq!(tokens.shape(), &[b, 1 + (f - 1) / 2, h / 4, w / 4]);
        assert!(tokens.iter().all(|&t| (0..512).contains(&t)));
        drop(out);
        let out = dec
            .run(ort::inputs!["tokens" => Tensor::from_array(tokens).unwrap()])
            .unwrap();
        assert_eq!(
            out["frames"].try_extract_array::<u8>().unwrap().shape(),
            &[b, f, h, w, 3]
        );
    }
}

#[test]
fn shapes_the_model_cannot_take_are_errors() {
    let dir = export_preset("tiny", 12, false).unwrap();
    let mut enc = session(&dir.join("encoder.onnx")).unwrap();
    // 4 frames: not 1 + k * 2; 12 rows: not a multiple of patch 4 x window 2
    // the error names the node that cannot take the shape: the temporal patch embedding for
    // the frame count, the window partition for the size (the elements pad before running)
    for (f, h, w, node) in [
        (4, 16, 16, "encoder/to_patch_emb/Reshape"),
        (5, 12, 16, "/1/Reshape"),
        (5, 16, 20, "/1/Reshape"),
    ] {
        let result = enc.run(ort::inputs!["frames" => Tensor::from_array(frames(1, f, h, w)).unwrap()]);
        let err = result
            .err()
            .unwrap_or_else(|| panic!("{f} frames of {h}x{w} were accepted"))
            .to_string();
        assert!(
            err.contains(node) && err.contains("cannot be reshaped"),
            "{f} frames of {h}x{w}: {err}"
        );
    }
}

/// PEG's depthwise 3x3x3 convolution, which the tracer writes as three 2-D depthwise ones
/// over frames shifted in time (export/src/model/peg.rs), against the convolution written
/// out here: causal (2 frames of zeros before) and not (1 before, 1 after), batch 2, odd
/// sizes, and a single frame.
#[test]
fn peg_is_the_depthwise_3d_convolution() {
    use omnitok_export::graph::{DType, Dim, Graph, InputDim};
    use omnitok_export::model::peg::Peg;
    use omnitok_export::model::{Ctx, ModulePath, VideoShape};
    use omnitok_export::{AttentionSemantics, Source, Weights, onnx};

    for (causal, (b, t, h, w)) in [
        (true, (2, 3, 4, 5)),
        (false, (2, 3, 4, 5)),
        (true, (1, 1, 3, 2)),
        (false, (1, 1, 3, 2)),
    ] {
        let mut cfg = omnitok_export::preset("tiny").unwrap().config();
        cfg.causal_in_peg = causal;
        let d = cfg.embedding_dim as usize;
        let weights = Weights::new(Source::Random(5));
        let mut g = Graph::new();
        let fixed = |n: usize| InputDim::Fixed(n as i64);
        let x = g
            .input("x", DType::F32, &[fixed(b * t), fixed(h * w), fixed(d)])
            .unwrap();
        let shape = VideoShape {
            b: Dim::Fixed(b as i64),
            t: Dim::Fixed(t as i64),
            h: Dim::Fixed(h as i64),
            w: Dim::Fixed(w as i64),
        };
        let y = {
            let mut cx = Ctx {
                g: &mut g,
                w: &weights,
                cfg: &cfg,
                semantics: AttentionSemantics::Sdpa,
            };
            let peg = Peg::load(&mut cx, ModulePath::top("peg")).unwrap();
            peg.forward(&mut cx, &x, &shape).unwrap()
        };
        g.output(&y, "y", &[]).unwrap();
        let path = omnitok::scratch_dir(&format!("peg-{causal}-{t}")).join("peg.onnx");
        onnx::save(g.into_model("peg"), &path).unwrap();

        let k = weights.get("peg.dsconv.weight", &[d, 1, 3, 3, 3]).unwrap().into_owned();
        let bias = weights.get("peg.dsconv.bias", &[d]).unwrap().into_owned();
        let input = Array::from_shape_fn(IxDyn(&[b * t, h * w, d]), |i| {
            ((i[0] * 37 + i[1] * 11 + i[2] * 5) % 17) as f32 / 8.0 - 1.0
        });
        let at = |bi: usize, ti: isize, hi: isize, wi: isize, c: usize| -> f32 {
            let inside =
                (0..t as isize).contains(&ti) && (0..h as isize).contains(&hi) && (0..w as isize).contains(&wi);
            if inside {
                input[[bi * t + ti as usize, hi as usize * w + wi as usize, c]]
            } else {
                0.0
            }
        };
        let front: isize = if causal { 2 } else { 1 };
        let expected = Array::from_shape_fn(IxDyn(&[b * t, h * w, d]), |i| {
            let (bi, ti, hi, wi, c) = (
                i[0] / t,
                (i[0] % t) as isize,
                (i[1] / w) as isize,
                (i[1] % w) as isize,
                i[2],
            );
            let mut s = bias[c];
            for dt in 0..3 {
                for dh in 0..3 {
                    for dw in 0..3 {
                        let v = at(
                            bi,
                            ti + dt as isize - front,
                            hi + dh as isize - 1,
                            wi + dw as isize - 1,
                            c,
                        );
                        s += k[c * 27 + dt * 9 + dh * 3 + dw] * v;
                    }
                }
            }
            s
        });
        let mut s = session(&path).unwrap();
        let out = s.run(ort::inputs!["x" => Tensor::from_array(input).unwrap()]).unwrap();
        let got = out["y"].try_extract_array::<f32>().unwrap().to_owned();
        let diff = omnitok::max_abs_diff(&got, &expected);
        assert!(diff < 1e-5, "causal {causal}, {t} frames: differs by {diff}");
    }
}
