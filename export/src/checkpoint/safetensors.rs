//! `.safetensors` files: an 8-byte little-endian header length, a JSON header
//! `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}`,
//! then the data section. Tensors are streamed straight from the file in offset
//! order while the whole file is hashed.

use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};

use super::convert::{Decoder, check_len, numel};
use super::json::{self, Json};
use super::stream::{HashedFile, Input};
use super::{Checkpoint, DType, Format, Tensor, is_training_only};

/// The safetensors format's own limit on the header size.
const MAX_HEADER: u64 = 100_000_000;

fn dtype_from_name(name: &str) -> Option<DType> {
    Some(match name {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        "I64" => DType::I64,
        "I32" => DType::I32,
        "U8" => DType::U8,
        "BOOL" => DType::Bool,
        _ => return None,
    })
}

struct Entry {
    name: String,
    dtype_name: String,
    dtype: Option<DType>,
    shape: Vec<usize>,
    begin: u64,
    end: u64,
}

fn parse_entry(name: &str, v: &Json) -> Result<Entry> {
    let bad = |what: &str| anyhow!("the header entry for tensor '{name}' {what}");
    let Json::Obj(_) = v else {
        return Err(bad("is not an object"));
    };
    let Some(Json::Str(dtype_name)) = v.get("dtype") else {
        return Err(bad("has no \"dtype\" string"));
    };
    let Some(Json::Arr(shape)) = v.get("shape") else {
        return Err(bad("has no \"shape\" list"));
    };
    let shape = shape
        .iter()
        .map(|d| {
            d.as_u64()
                .and_then(|d| usize::try_from(d).ok())
                .ok_or_else(|| bad("has a shape entry that is not a non-negative integer"))
        })
        .collect::<Result<Vec<_>>>()?;
    let offsets = match v.get("data_offsets") {
        Some(Json::Arr(o)) if o.len() == 2 => (o[0].as_u64(), o[1].as_u64()),
        _ => return Err(bad("has no \"data_offsets\" pair")),
    };
    let (Some(begin), Some(end)) = offsets else {
        return Err(bad("has data_offsets that are not non-negative integers"));
    };
    if end < begin {
        return Err(bad(&format!(
            "has data_offsets [{begin}, {end}] that end before they begin"
        )));
    }
    Ok(Entry {
        name: name.to_string(),
        dtype: dtype_from_name(dtype_name),
        dtype_name: dtype_name.clone(),
        shape,
        begin,
        end,
    })
}

pub(crate) fn load(input: Input, progress: &mut dyn FnMut(u64, u64)) -> Result<Checkpoint> {
    let mut f = HashedFile::open(input, progress)?;
    let file_len = f.len();
    if file_len < 8 {
        bail!("the file is only {file_len} bytes, too short for a safetensors header length");
    }
    let mut len_bytes = [0u8; 8];
    f.read(8, &mut |c| len_bytes.copy_from_slice(&c[..8]))?;
    let n = u64::from_le_bytes(len_bytes);
    if n > file_len - 8 {
        bail!(
            "the safetensors header claims {n} bytes but only {} follow its length prefix; \
             the file is truncated or not a safetensors file",
            file_len - 8
        );
    }
    if n > MAX_HEADER {
        bail!("the safetensors header is {n} bytes, more than the format allows ({MAX_HEADER})");
    }
    let header = f.read_vec(n)?;
    let header = json::parse(&header).context("the safetensors header is not valid JSON")?;
    let Json::Obj(members) = header else {
        bail!("the safetensors header is not a JSON object");
    };
    let data_start = 8 + n;
    let data_len = file_len - data_start;

    let mut entries = Vec::with_capacity(members.len());
    let mut seen = std::collections::HashSet::new();
    for (name, v) in &members {
        if name == "__metadata__" {
            continue;
        }
        if !seen.insert(name.as_str()) {
            bail!("the safetensors header names tensor '{name}' twice");
        }
        let e = parse_entry(name, v)?;
        if e.end > data_len {
            bail!(
                "tensor '{name}' ends at byte {} of the data section, which holds only {data_len} \
                 bytes; the file is truncated",
                e.end
            );
        }
        if let Some(dtype) = e.dtype {
            let count = numel(&e.shape).with_context(|| format!("tensor '{name}'"))?;
            let want = (count as u64).checked_mul(dtype.size_bytes() as u64);
            if want != Some(e.end - e.begin) {
                bail!(
                    "tensor '{name}' ({} {:?}) needs {} bytes but its data_offsets [{}, {}] span {}",
                    e.dtype_name,
                    e.shape,
                    want.map_or_else(|| "too many".to_string(), |w| w.to_string()),
                    e.begin,
                    e.end,
                    e.end - e.begin
                );
            }
        }
        entries.push(e);
    }
    entries.sort_by_key(|e| (e.begin, e.end));

    let mut tensors = BTreeMap::new();
    let mut skipped = 0;
    let mut prev: Option<&Entry> = None;
    for e in &entries {
        if let Some(p) = prev
            && e.begin < p.end
        {
            bail!("tensors '{}' and '{}' overlap in the data section", p.name, e.name);
        }
        prev = Some(e);
        if is_training_only(&e.name) {
            skipped += 1;
            continue;
        }
        let Some(dtype) = e.dtype else {
            bail!(
                "tensor '{}' has dtype {}, which is not supported (F32, F16, BF16, F64, I64, I32, \
                 U8, BOOL are)",
                e.name,
                e.dtype_name
            );
        };
        f.skip_to(data_start + e.begin)?;
        let count = usize::try_from(check_len(e.end - e.begin, dtype)?)?;
        let mut dec = Decoder::new(dtype, false, count).with_context(|| format!("tensor '{}'", e.name))?;
        f.read(e.end - e.begin, &mut |c| dec.push(c))
            .with_context(|| format!("reading tensor '{}'", e.name))?;
        tensors.insert(
            e.name.clone(),
            Tensor {
                dtype,
                shape: e.shape.clone(),
                data: dec.finish(),
            },
        );
    }
    let sha256 = f.finish()?;
    Ok(Checkpoint {
        format: Format::Safetensors,
        tensors,
        hyper_parameters: None,
        sha256,
        skipped,
    })
}

#[cfg(test)]
mod tests {
    use super::super::tests::load_err;
    use super::super::{TensorData, load};
    use super::*;
    use crate::test_support::{TempFile, golden};
    use safetensors::tensor::{Dtype, TensorView};

    fn write_st(name: &str, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> TempFile {
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let bytes = safetensors::serialize(views, None).unwrap();
        TempFile::with(name, &bytes)
    }

    fn le16(v: &[u16]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn f16_and_bf16_widen_exactly() {
        // 1.0, 2^-24 (smallest subnormal), 65504 (max), -inf, -0.0, 0.333 (rounded), NaN
        let f16 = [0x3c00u16, 0x0001, 0x7bff, 0xfc00, 0x8000, 0x3555, 0x7e00];
        let bf16 = [0x3f80u16, 0x0001, 0x7f7f, 0xff80, 0x8000, 0x3eab, 0x7fc0];
        let t = write_st(
            "widen.safetensors",
            &[
                ("h", Dtype::F16, vec![7], le16(&f16)),
                ("b", Dtype::BF16, vec![7], le16(&bf16)),
            ],
        );
        let ck = load(&t.path, &mut |_, _| {}).unwrap();
        let bits = |k: &str| match &ck.tensors[k].data {
            TensorData::F32(v) => v.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            TensorData::I64(_) => panic!(),
        };
        assert_eq!(
            bits("h"),
            [
                0x3f80_0000,
                0x3380_0000,
                0x477f_e000,
                0xff80_0000,
                0x8000_0000,
                0x3eaa_a000,
                0x7fc0_0000
            ]
        );
        let expect: Vec<u32> = bf16.iter().map(|&h| u32::from(h) << 16).collect();
        assert_eq!(bits("b"), expect);
        assert_eq!(ck.tensors["h"].dtype, DType::F16);
        assert_eq!(ck.tensors["b"].dtype, DType::BF16);
        assert_eq!(ck.tensors["b"].shape, [7]);
        assert!(ck.hyper_parameters.is_none());
    }

    #[test]
    fn other_dtypes_and_training_only() {
        let t = write_st(
            "dtypes.safetensors",
            &[
                (
                    "d",
                    Dtype::F64,
                    vec![2],
                    [0.1f64, -2.0].iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
                (
                    "i",
                    Dtype::I32,
                    vec![1, 2],
                    [-7i32, 9].iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
                ("l", Dtype::I64, vec![], i64::MIN.to_le_bytes().to_vec()),
                ("u", Dtype::U8, vec![2], vec![0, 255]),
                ("t", Dtype::BOOL, vec![2], vec![1, 0]),
                ("e", Dtype::F32, vec![0, 3], vec![]),
                ("codebook.N", Dtype::I16, vec![2], vec![1, 0, 2, 0]),
                ("perceptual_model.x", Dtype::F32, vec![1], vec![0; 4]),
            ],
        );
        let ck = load(&t.path, &mut |_, _| {}).unwrap();
        assert_eq!(ck.skipped, 2);
        assert_eq!(ck.tensors.len(), 6);
        assert_eq!(ck.tensors["d"].data, TensorData::F32(vec![0.1f64 as f32, -2.0]));
        assert_eq!(ck.tensors["i"].data, TensorData::I64(vec![-7, 9]));
        assert_eq!(ck.tensors["i"].shape, [1, 2]);
        assert_eq!(ck.tensors["l"].data, TensorData::I64(vec![i64::MIN]));
        assert_eq!(ck.tensors["l"].shape, Vec::<usize>::new());
        assert_eq!(ck.tensors["u"].data, TensorData::I64(vec![0, 255]));
        assert_eq!(ck.tensors["t"].data, TensorData::I64(vec![1, 0]));
        assert_eq!(ck.tensors["e"].data, TensorData::F32(vec![]));
        // An unsupported dtype is an error only when the tensor is needed.
        let t = write_st("i16.safetensors", &[("w", Dtype::I16, vec![1], vec![1, 0])]);
        let e = format!("{:#}", load(&t.path, &mut |_, _| {}).unwrap_err());
        assert!(e.contains("'w' has dtype I16"), "{e}");
    }

    fn raw(name: &str, header: &str, data: &[u8]) -> TempFile {
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(data);
        TempFile::with(name, &b)
    }

    #[test]
    fn malformed_headers_are_clear_errors() {
        let ok = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
        let cases: &[(&str, &str, &[u8], &str)] = &[
            (
                "bad_json",
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}"#,
                &[0; 8],
                "not valid JSON",
            ),
            ("not_obj", r#"[1, 2, 3]"#, &[], "not a JSON object"),
            (
                "no_dtype",
                r#"{"a":{"shape":[2],"data_offsets":[0,8]}}"#,
                &[0; 8],
                "no \"dtype\"",
            ),
            (
                "bad_shape",
                r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#,
                &[0; 8],
                "shape entry",
            ),
            (
                "bad_offsets",
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0]}}"#,
                &[0; 8],
                "data_offsets",
            ),
            (
                "backwards",
                r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}"#,
                &[0; 8],
                "end before they begin",
            ),
            (
                "size",
                r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                &[0; 8],
                "needs 12 bytes",
            ),
            ("short_data", ok, &[0; 4], "truncated"),
            (
                "dup",
                r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}"#,
                &[0; 2],
                "twice",
            ),
            (
                "overlap",
                r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[1,3]}}"#,
                &[0; 3],
                "overlap",
            ),
        ];
        for (name, header, data, want) in cases {
            let t = raw(&format!("{name}.safetensors"), header, data);
            let e = load_err(&t);
            assert!(e.contains(want), "{name}: {e}");
        }
        // Header length past the end of the file (a truncated header).
        let mut b = 1000u64.to_le_bytes().to_vec();
        b.extend_from_slice(br#"{"a":{"dtype""#);
        let t = TempFile::with("trunc_header.safetensors", &b);
        let e = load_err(&t);
        assert!(e.contains("claims 1000 bytes"), "{e}");
    }

    #[test]
    fn truncated_golden_safetensors() {
        let Some(path) = golden("rope_vq.weights.safetensors") else {
            return;
        };
        let bytes = std::fs::read(path).unwrap();
        let t = TempFile::with("half.safetensors", &bytes[..bytes.len() / 2]);
        let e = load_err(&t);
        assert!(e.contains("truncated"), "{e}");
    }
}
