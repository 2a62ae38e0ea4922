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
