//! Serialising a [`ModelProto`] to disk, with external data for large models.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use prost::Message;

use super::proto::{DataLocation, DataType, ModelProto, StringStringEntryProto, TensorProto};

/// Total initializer payload from which [`save`] moves weights to a sidecar
/// file: 1.5 GiB, leaving headroom under protobuf's 2 GiB message limit.
pub const EXTERNAL_DATA_THRESHOLD: u64 = 3 << 29;

/// Initializers with more payload bytes than this go to the sidecar file.
pub const EXTERNAL_TENSOR_MIN_BYTES: u64 = 1024;

/// Offsets in the sidecar file are multiples of this.
pub const EXTERNAL_DATA_ALIGN: u64 = 4096;

const ZEROS: [u8; EXTERNAL_DATA_ALIGN as usize] = [0; EXTERNAL_DATA_ALIGN as usize];

/// Largest message protobuf (and so ONNX) can parse: 2 GiB - 1.
const PROTOBUF_LIMIT: usize = i32::MAX as usize;

/// What [`save`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveReport {
    /// The `.onnx` file.
    pub model_path: PathBuf,
    /// Size of the `.onnx` file.
    pub model_bytes: u64,
    /// The sidecar `<file name>.data`, when external data was used.
    pub data_path: Option<PathBuf>,
    /// Size of the sidecar file (0 without one).
    pub data_bytes: u64,
    /// Number of initializers stored in the sidecar file.
    pub external_tensors: usize,
}

impl SaveReport {
    /// Whether weights were written to a sidecar file.
    pub fn used_external_data(&self) -> bool {
        self.data_path.is_some()
    }

    /// Bytes written in all.
    pub fn total_bytes(&self) -> u64 {
        self.model_bytes + self.data_bytes
    }
}

/// Writes `model` to `path`.
///
/// Under [`EXTERNAL_DATA_THRESHOLD`] bytes of initializer payload the file is
/// self-contained. Above it, every initializer of the main graph with more than
/// [`EXTERNAL_TENSOR_MIN_BYTES`] is moved to `<file name>.data` beside `path`
/// (`data_location = EXTERNAL`, `location` relative, offsets aligned to
/// [`EXTERNAL_DATA_ALIGN`]). Each file is written to `<name>.tmp` and renamed
/// into place, the sidecar first. A stale sidecar from an earlier save is left
/// alone when the new model is self-contained.
pub fn save(model: ModelProto, path: &Path) -> Result<SaveReport> {
    save_with_threshold(model, path, EXTERNAL_DATA_THRESHOLD)
}

/// [`save`] with the payload threshold as a parameter: external data is used
/// when the initializers hold `threshold` bytes or more.
pub fn save_with_threshold(mut model: ModelProto, path: &Path, threshold: u64) -> Result<SaveReport> {
    let file_name = path
        .file_name()
        .with_context(|| format!("saving ONNX model to {}: path has no file name", path.display()))?;
    let payload: u64 = model
        .graph
        .iter()
        .flat_map(|g| &g.initializer)
        .map(TensorProto::payload_len)
        .sum();

    let mut report = SaveReport {
        model_path: path.to_path_buf(),
        model_bytes: 0,
        data_path: None,
        data_bytes: 0,
        external_tensors: 0,
    };

    if payload >= threshold {
        let mut data_name = file_name.to_os_string();
        data_name.push(".data");
        let data_path = path.with_file_name(&data_name);
        let location = data_name
            .to_str()
            .with_context(|| format!("external data file name {} is not UTF-8", data_path.display()))?
            .to_owned();
        let (count, bytes) = write_external(&mut model, &data_path, &location)
            .with_context(|| format!("writing ONNX external data {}", data_path.display()))?;
        if count == 0 {
            // Nothing was large enough to move: no sidecar.
            fs::remove_file(&data_path).with_context(|| format!("removing empty {}", data_path.display()))?;
        } else {
            report.data_path = Some(data_path);
            report.data_bytes = bytes;
            report.external_tensors = count;
        }
    }

    let len = model.encoded_len();
    if len > PROTOBUF_LIMIT {
        if let Some(data_path) = &report.data_path {
            let _ = fs::remove_file(data_path);
        }
        bail!(
            "ONNX model {} would be {len} bytes, over protobuf's 2 GiB limit \
             (initializer payload {payload} bytes, {} moved to external data)",
            path.display(),
            report.data_bytes
        );
    }
    let bytes = model.encode_to_vec();
    drop(model);
    write_atomically(path, |w| w.write_all(&bytes))
        .with_context(|| format!("writing ONNX model {}", path.display()))?;
    report.model_bytes = bytes.len() as u64;
    Ok(report)
}

/// Reads and decodes an ONNX model. External data is not loaded: such
/// tensors keep their `external_data` references.
pub fn load(path: &Path) -> Result<ModelProto> {
    let bytes = fs::read(path).with_context(|| format!("reading ONNX model {}", path.display()))?;
    ModelProto::decode(bytes.as_slice()).with_context(|| format!("decoding ONNX model {}", path.display()))
}

/// Moves large initializers of the main graph into `data_path`; returns the
/// number moved and the file's size.
fn write_external(model: &mut ModelProto, data_path: &Path, location: &str) -> Result<(usize, u64)> {
    let Some(graph) = model.graph.as_mut() else {
        return Ok((0, 0));
    };
    let mut count = 0;
    let mut offset = 0u64;
    write_atomically(data_path, |w| {
        for tensor in &mut graph.initializer {
            if tensor.is_external() || tensor.payload_len() <= EXTERNAL_TENSOR_MIN_BYTES {
                continue;
            }
            let Some(raw) = take_raw(tensor) else {
                continue; // strings and packed sub-byte types stay inline
            };
            let aligned = offset.next_multiple_of(EXTERNAL_DATA_ALIGN);
            w.write_all(&ZEROS[..(aligned - offset) as usize])?;
            w.write_all(&raw)?;
            let length = raw.len() as u64;
            tensor.data_location = Some(DataLocation::External as i32);
            tensor.external_data = vec![
                StringStringEntryProto::new("location", location),
                StringStringEntryProto::new("offset", aligned.to_string()),
                StringStringEntryProto::new("length", length.to_string()),
            ];
            offset = aligned + length;
            count += 1;
        }
        Ok(())
    })?;
    Ok((count, offset))
}

/// Takes a tensor's element data out as little-endian bytes, clearing the
/// field it came from. `None` when it cannot be expressed as `raw_data`.
fn take_raw(t: &mut TensorProto) -> Option<Vec<u8>> {
    fn le<T: Copy, const N: usize>(v: Vec<T>, f: fn(T) -> [u8; N]) -> Vec<u8> {
        v.into_iter().flat_map(f).collect()
    }
    if t.raw_data.is_some() {
        return t.raw_data.take();
    }
    // Typed fields convert directly only where the field's element type is the
    // tensor's (int32_data also carries 8/16-bit and float16 values, unconverted).
    Some(match t.elem_type() {
        DataType::Float if !t.float_data.is_empty() => le(std::mem::take(&mut t.float_data), f32::to_le_bytes),
        DataType::Int32 if !t.int32_data.is_empty() => le(std::mem::take(&mut t.int32_data), i32::to_le_bytes),
        DataType::Int64 if !t.int64_data.is_empty() => le(std::mem::take(&mut t.int64_data), i64::to_le_bytes),
        DataType::Double if !t.double_data.is_empty() => le(std::mem::take(&mut t.double_data), f64::to_le_bytes),
        DataType::Uint64 if !t.uint64_data.is_empty() => le(std::mem::take(&mut t.uint64_data), u64::to_le_bytes),
        _ => return None,
    })
}

/// Writes `path` through `<path>.tmp`, synced, then renamed over `path`.
/// The temporary file is removed on failure.
fn write_atomically(path: &Path, body: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>) -> Result<()> {
    let mut tmp: OsString = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let result = (|| -> Result<()> {
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        body(&mut w).with_context(|| format!("writing {}", tmp.display()))?;
        let file = w
            .into_inner()
            .map_err(|e| e.into_error())
            .with_context(|| format!("writing {}", tmp.display()))?;
        file.sync_all().with_context(|| format!("syncing {}", tmp.display()))?;
        drop(file);
        fs::rename(&tmp, path).with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::super::proto::{Dim, GraphProto, NodeProto, ValueInfoProto};
    use super::*;
    use crate::test_support::{Scratch, python};
    use std::process::Command;

    const HIDDEN: usize = 256;

    /// Deterministic weights, recomputed the same way by the Python check.
    fn weights(rows: usize, cols: usize, a: usize, b: usize) -> Vec<f32> {
        let mut v = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for j in 0..cols {
                v.push(((i * a + j * b) % 23) as f32 / 23.0 - 0.5);
            }
        }
        v
    }

    /// y = Relu(x @ W1 + b1) @ W2 + b2 with x: float[batch, 4], y: float[batch, 3].
    /// W1 (4 KiB) and W2 (3 KiB) are external-data candidates; b1 (exactly
    /// 1 KiB) and b2 (12 bytes) stay inline.
    fn tiny_model() -> ModelProto {
        let h = HIDDEN as i64;
        let mut g = GraphProto::new("tiny");
        g.input.push(ValueInfoProto::tensor(
            "x",
            DataType::Float,
            &[Dim::named("batch"), Dim::Fixed(4)],
        ));
        g.output.push(ValueInfoProto::tensor(
            "y",
            DataType::Float,
            &[Dim::named("batch"), Dim::Fixed(3)],
        ));
        g.initializer = vec![
            TensorProto::from_f32("W1", &[4, h], &weights(4, HIDDEN, 7, 3)),
            TensorProto::from_f32("b1", &[h], &weights(1, HIDDEN, 0, 5)),
            TensorProto::from_f32("W2", &[h, 3], &weights(HIDDEN, 3, 11, 2)),
            TensorProto::from_f32("b2", &[3], &[0.25, -0.5, 1.0]),
        ];
        g.node = vec![
            NodeProto::new("MatMul", "l1/MatMul", ["x", "W1"], ["l1/mm"]),
            NodeProto::new("Add", "l1/Add", ["l1/mm", "b1"], ["l1/out"]),
            NodeProto::new("Relu", "act/Relu", ["l1/out"], ["act/out"]),
            NodeProto::new("MatMul", "l2/MatMul", ["act/out", "W2"], ["l2/mm"]),
            NodeProto::new("Add", "l2/Add", ["l2/mm", "b2"], ["y"]),
        ];
        let mut m = ModelProto::new(10, &[("", 23), ("com.microsoft", 1)], g).with_producer("omnitok", "test");
        m.set_metadata("omnitok.kind", "test");
        m
    }

    fn initializer<'a>(m: &'a ModelProto, name: &str) -> &'a TensorProto {
        m.graph
            .as_ref()
            .unwrap()
            .initializer
            .iter()
            .find(|t| t.name() == name)
            .unwrap()
    }

    #[test]
    fn round_trip_inline() {
        let dir = Scratch::new("inline");
        let path = dir.join("tiny.onnx");
        let model = tiny_model();
        let report = save(model.clone(), &path).unwrap();
        assert!(!report.used_external_data());
        assert_eq!(report.external_tensors, 0);
        assert_eq!(report.model_bytes, fs::metadata(&path).unwrap().len());
        assert_eq!(report.model_bytes, model.encoded_len() as u64);
        assert!(!dir.join("tiny.onnx.tmp").exists());
        assert!(!dir.join("tiny.onnx.data").exists());

        let back = load(&path).unwrap();
        assert_eq!(back, model);
        assert_eq!(back.ir_version, Some(10));
        assert_eq!(back.opset(""), Some(23));
        assert_eq!(back.metadata("omnitok.kind"), Some("test"));
        let g = back.graph.as_ref().unwrap();
        assert_eq!(g.input[0].dims(), Some(vec![Dim::named("batch"), Dim::Fixed(4)]));
        assert_eq!(g.node[0].op_type(), "MatMul");
    }

    #[test]
    fn external_data() {
        let dir = Scratch::new("external");
        let path = dir.join("tiny.onnx");
        let model = tiny_model();
        let report = save_with_threshold(model.clone(), &path, 0).unwrap();
        let data_path = dir.join("tiny.onnx.data");
        assert_eq!(report.data_path.as_deref(), Some(data_path.as_path()));
        assert_eq!(report.external_tensors, 2);
        let data = fs::read(&data_path).unwrap();
        assert_eq!(report.data_bytes, data.len() as u64);
        assert_eq!(report.model_bytes, fs::metadata(&path).unwrap().len());
        assert!(!dir.join("tiny.onnx.data.tmp").exists());

        let back = load(&path).unwrap();
        for name in ["W1", "W2"] {
            let t = initializer(&back, name);
            let orig = initializer(&model, name);
            assert!(t.is_external(), "{name}");
            assert_eq!(t.raw_data, None, "{name}");
            assert_eq!(t.external_entry("location"), Some("tiny.onnx.data"));
            let offset: u64 = t.external_entry("offset").unwrap().parse().unwrap();
            let length: usize = t.external_entry("length").unwrap().parse().unwrap();
            assert_eq!(offset % EXTERNAL_DATA_ALIGN, 0, "{name} offset {offset}");
            let bytes = &data[offset as usize..offset as usize + length];
            assert_eq!(Some(bytes), orig.raw_data.as_deref(), "{name}");
            // Everything but the data is unchanged.
            let mut inline = t.clone();
            inline.raw_data = Some(bytes.to_vec());
            inline.external_data.clear();
            inline.data_location = None;
            assert_eq!(&inline, orig);
        }
        assert_eq!(initializer(&back, "W2").external_entry("offset"), Some("4096"));
        for name in ["b1", "b2"] {
            let t = initializer(&back, name);
            assert!(!t.is_external() && t.external_data.is_empty(), "{name}");
            assert_eq!(t, initializer(&model, name));
        }
        assert_eq!(back.graph.as_ref().unwrap().node, model.graph.as_ref().unwrap().node);
    }

    #[test]
    fn typed_fields_go_external_as_raw_data() {
        let dir = Scratch::new("typed");
        let path = dir.join("typed.onnx");
        let values: Vec<f32> = (0..300).map(|i| i as f32).collect();
        let mut g = GraphProto::new("g");
        g.initializer.push(TensorProto {
            name: Some("w".into()),
            dims: vec![300],
            data_type: Some(DataType::Float as i32),
            float_data: values.clone(),
            ..Default::default()
        });
        let report = save_with_threshold(ModelProto::new(10, &[("", 23)], g), &path, 0).unwrap();
        assert_eq!(report.external_tensors, 1);
        let back = load(&path).unwrap();
        let t = initializer(&back, "w");
        assert!(t.float_data.is_empty() && t.is_external());
        let data = fs::read(dir.join("typed.onnx.data")).unwrap();
        let expect: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(data, expect);
    }

    #[test]
    fn no_sidecar_when_nothing_is_large() {
        let dir = Scratch::new("small");
        let path = dir.join("small.onnx");
        let mut g = GraphProto::new("g");
        g.initializer.push(TensorProto::from_f32("b", &[3], &[1.0, 2.0, 3.0]));
        let report = save_with_threshold(ModelProto::new(10, &[("", 23)], g), &path, 0).unwrap();
        assert!(!report.used_external_data());
        assert!(!dir.join("small.onnx.data").exists());
    }

    #[test]
    fn errors_name_the_path() {
        let scratch = Scratch::new("missing");
        let path = scratch.join("sub/model.onnx");
        let err = format!("{:#}", save(tiny_model(), &path).unwrap_err());
        assert!(err.contains("sub/model.onnx"), "{err}");
        let err = format!("{:#}", load(&path).unwrap_err());
        assert!(err.contains("sub/model.onnx"), "{err}");

        let dir = Scratch::new("garbage");
        let bad = dir.join("bad.onnx");
        fs::write(&bad, [0xff, 0xff, 0xff]).unwrap();
        let err = format!("{:#}", load(&bad).unwrap_err());
        assert!(err.contains("decoding ONNX model") && err.contains("bad.onnx"), "{err}");
    }

    /// Checks a saved model with the reference `onnx` checker and runs it with
    /// ONNX Runtime against a NumPy computation of the same function.
    const PY_CHECK: &str = r#"
import sys
import numpy as np
import onnx
import onnxruntime as ort

path, hidden = sys.argv[1], int(sys.argv[2])
onnx.checker.check_model(path, full_check=True)

def weights(rows, cols, a, b):
    i = np.arange(rows)[:, None]
    j = np.arange(cols)[None, :]
    return (((i * a + j * b) % 23).astype(np.float32) / np.float32(23) - np.float32(0.5)).astype(np.float32)

w1 = weights(4, hidden, 7, 3)
b1 = weights(1, hidden, 0, 5)[0]
w2 = weights(hidden, 3, 11, 2)
b2 = np.array([0.25, -0.5, 1.0], np.float32)
x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
expect = np.maximum(x @ w1 + b1, 0) @ w2 + b2

sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
(y,) = sess.run(None, {"x": x})
assert y.shape == (5, 3), y.shape
np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-5)
m = onnx.load(path, load_external_data=False)
print("ok", path, "ir", m.ir_version, "opsets", [(o.domain, o.version) for o in m.opset_import],
      "onnx", onnx.__version__, "ort", ort.__version__)
"#;

    #[test]
    fn onnx_checker_and_onnxruntime_accept_output() {
        let Some(python) = python() else { return };
        let dir = Scratch::new("python");
        let inline = dir.join("inline.onnx");
        let external = dir.join("external.onnx");
        assert!(!save(tiny_model(), &inline).unwrap().used_external_data());
        assert!(
            save_with_threshold(tiny_model(), &external, 0)
                .unwrap()
                .used_external_data()
        );
        for path in [&inline, &external] {
            let out = Command::new(&python)
                .arg("-c")
                .arg(PY_CHECK)
                .arg(path)
                .arg(HIDDEN.to_string())
                .output()
                .unwrap_or_else(|e| panic!("running {python:?}: {e}"));
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "{} failed:\n{stdout}\n{stderr}", path.display());
            println!("{}", stdout.trim());
        }
    }
}
