//! What the GPU path changes, checked on CPU: the engine's I/O-binding run gives exactly what
//! a plain ONNX Runtime run gives, f16 graphs load through the plugin's runtime with their
//! precision in the metadata (and the header's informative model name) and the model
//! identity of the float32 graphs, and a GPU provider that cannot load is a clear error.

use gstomnitok::runtime::{self, DType, ExecutionProvider, Role, SessionSettings, Tensor, TensorData};
use ort::value::Tensor as OrtTensor;

fn frames(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 37 + i / 97) % 251) as u8).collect()
}

#[test]
fn io_binding_runs_match_plain_runs_bit_for_bit() {
    omnitok::init_ort();
    let dir = omnitok::export_preset("tiny", 9341, false).unwrap();
    let (b, f, h, w) = (2usize, 5usize, 16usize, 24usize);
    let data = frames(b * f * h * w * 3);
    let settings = SessionSettings::default();
    let mut enc = runtime::load(&dir.join("encoder.onnx"), Role::Encoder, &settings).unwrap();
    let mut dec = runtime::load(&dir.join("decoder.onnx"), Role::Decoder, &settings).unwrap();
    let input = Tensor {
        shape: vec![b, f, h, w, 3],
        data: TensorData::U8(data.clone()),
    };
    let tokens = enc
        .engine
        .run(vec![("frames", input)], &[("tokens", DType::I64)])
        .unwrap()
        .remove(0);
    let recon = dec
        .engine
        .run(vec![("tokens", tokens.clone())], &[("frames", DType::U8)])
        .unwrap()
        .remove(0);

    let mut plain_enc = omnitok::session(&dir.join("encoder.onnx")).unwrap();
    let out = plain_enc
        .run(ort::inputs!["frames" => OrtTensor::from_array((vec![b, f, h, w, 3], data)).unwrap()])
        .unwrap();
    let (shape, want) = out["tokens"].try_extract_tensor::<i64>().unwrap();
    assert_eq!(tokens.shape, shape.iter().map(|&d| d as usize).collect::<Vec<_>>());
    assert_eq!(tokens.data, TensorData::I64(want.to_vec()));
    let TensorData::I64(ids) = &tokens.data else {
        unreachable!()
    };
    let mut plain_dec = omnitok::session(&dir.join("decoder.onnx")).unwrap();
    let out = plain_dec
        .run(ort::inputs!["tokens" => OrtTensor::from_array((tokens.shape.clone(), ids.clone())).unwrap()])
        .unwrap();
    let (_, want) = out["frames"].try_extract_tensor::<u8>().unwrap();
    assert_eq!(recon.shape, vec![b, f, h, w, 3]);
    assert_eq!(recon.data, TensorData::U8(want.to_vec()));
    // A second run through the same engine (binding made afresh) is the same again.
    let input = Tensor {
        shape: vec![b, f, h, w, 3],
        data: TensorData::U8(frames(b * f * h * w * 3)),
    };
    let again = enc
        .engine
        .run(vec![("frames", input)], &[("tokens", DType::I64)])
        .unwrap()
        .remove(0);
    assert_eq!(again, tokens);
}

#[test]
fn f16_graphs_load_with_their_precision_and_the_float32_identity() {
    omnitok::init_ort();
    let f32_dir = omnitok::export_preset("tiny", 9351, false).unwrap();
    let dir = omnitok::scratch_dir(&format!("models/tiny-9351-f16-{}", std::process::id()));
    omnitok_export::half::convert_dir(&f32_dir, &dir).unwrap();
    let settings = SessionSettings::default();
    let half = runtime::load(&dir.join("encoder.onnx"), Role::Encoder, &settings).unwrap();
    let full = runtime::load(&f32_dir.join("encoder.onnx"), Role::Encoder, &settings).unwrap();
    assert_eq!(half.info.precision, "f16");
    assert_eq!(full.info.precision, "f32");
    assert_eq!(
        half.info.model_id, full.info.model_id,
        "f16 tokens decode with either decoder"
    );
    assert!(half.info.short_name().ends_with(" f16"), "{}", half.info.short_name());
    assert!(
        half.info.describe().contains("precision f16"),
        "{}",
        half.info.describe()
    );
    // Graph inputs and outputs keep their types: the decoder takes int64 tokens, gives uint8.
    let mut dec = runtime::load(&dir.join("decoder.onnx"), Role::Decoder, &settings).unwrap();
    let tokens = Tensor {
        shape: vec![1, 1, 4, 4],
        data: TensorData::I64((0..16).collect()),
    };
    let out = dec
        .engine
        .run(vec![("tokens", tokens)], &[("frames", DType::U8)])
        .unwrap();
    assert_eq!(out[0].shape, vec![1, 1, 16, 16, 3]);
}

#[test]
fn an_unusable_gpu_provider_is_a_clear_error() {
    omnitok::init_ort();
    let dir = omnitok::export_preset("tiny", 9361, false).unwrap();
    for provider in [ExecutionProvider::Cuda, ExecutionProvider::TensorRt] {
        let settings = SessionSettings {
            provider,
            tf32: true,
            trt_fp16: true,
            trt_profile: Some(runtime::engine::TrtProfile::encoder(2, 5, 16, 16)),
            ..Default::default()
        };
        match runtime::load(&dir.join("encoder.onnx"), Role::Encoder, &settings) {
            // A machine with a GPU and the provider libraries: it runs.
            Ok(m) => assert_eq!(m.active_provider, provider),
            Err(e) => {
                let e = e.to_string();
                assert!(e.contains(provider.nick()) && e.contains("not usable"), "{e}");
            }
        }
    }
}
