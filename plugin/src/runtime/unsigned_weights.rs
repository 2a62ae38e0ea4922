//! Full-range int8 graphs on x86 CPUs without VNNI, made exact at load.
//!
//! An int8 graph whose weights use the whole int8 range (`omnitok.int8_cpu` `x86-vnni`) is
//! computed exactly by ONNX Runtime's uint8 x int8 kernels only where they accumulate in 32
//! bits (AVX-512 VNNI, AVX-VNNI, AMX, ARM). On other x86 CPUs those kernels
//! (`vpmaddubsw`) add pairs of products in saturating int16, but the uint8 x uint8 kernels
//! widen both operands to int16 first (`vpmaddwd`) and are exact. So there the weights are
//! stored as uint8 with zero point 128 before the session is built: `q + 128` with zero
//! point `0 + 128` gives every integer product unchanged, in a kernel that cannot saturate.
//!
//! The rewrite works on the serialized ONNX protobuf in place: an int8 initializer becomes a
//! uint8 one of the same length (`data_type` 3 becomes 2, each raw byte `b ^ 0x80`, which is
//! `b + 128` from two's complement to offset binary), so no length field changes. It touches
//! exactly the weights (`B`) and weight zero points of the integer MatMuls, and refuses a
//! graph where one of them lacks its zero point input (graphs from before the exporter wrote
//! it) or where another node reads them.

use std::collections::{HashMap, HashSet};
use std::ops::Range;

/// ONNX `TensorProto.DataType` values.
const INT8: u64 = 3;
const UINT8: u64 = 2;

/// Why a graph's weights cannot be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsignedError {
    #[error("its ONNX protobuf is malformed: {0}")]
    Malformed(&'static str),
    #[error(
        "its integer MatMul '{0}' has int8 weights without a weight zero point input (written before omnitok-export gave them one): export it again with this version's omnitok-export"
    )]
    NoZeroPoint(String),
    #[error("its int8 weight '{0}' is not an initializer of raw bytes")]
    NotRaw(String),
    #[error("its int8 initializer '{0}' is read by a node that is not an integer MatMul")]
    SharedWeight(String),
}

/// One protobuf field: its number, and its payload (`Len`) or value (`Varint`).
enum Field {
    Varint { value: u64, at: Range<usize> },
    Len(Range<usize>),
    Fixed,
}

/// The fields of the protobuf message in `buf[range]`, as (number, field).
fn fields(buf: &[u8], range: Range<usize>) -> Result<Vec<(u64, Field)>, UnsignedError> {
    let mut out = Vec::new();
    let mut at = range.start;
    while at < range.end {
        let key = varint(buf, &mut at, range.end)?;
        let (number, wire) = (key >> 3, key & 7);
        let field = match wire {
            0 => {
                let start = at;
                let value = varint(buf, &mut at, range.end)?;
                Field::Varint { value, at: start..at }
            }
            1 | 5 => {
                at = at
                    .checked_add(if wire == 1 { 8 } else { 4 })
                    .filter(|&e| e <= range.end)
                    .ok_or(UnsignedError::Malformed("truncated fixed-width field"))?;
                Field::Fixed
            }
            2 => {
                let len = varint(buf, &mut at, range.end)?;
                let end = usize::try_from(len)
                    .ok()
                    .and_then(|l| at.checked_add(l))
                    .filter(|&e| e <= range.end)
                    .ok_or(UnsignedError::Malformed("a length runs past its message"))?;
                let payload = at..end;
                at = end;
                Field::Len(payload)
            }
            _ => return Err(UnsignedError::Malformed("unsupported wire type")),
        };
        out.push((number, field));
    }
    Ok(out)
}

fn varint(buf: &[u8], at: &mut usize, end: usize) -> Result<u64, UnsignedError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if *at >= end {
            return Err(UnsignedError::Malformed("truncated varint"));
        }
        let b = buf[*at];
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(UnsignedError::Malformed("varint longer than 64 bits"))
}

fn string(buf: &[u8], r: &Range<usize>) -> String {
    String::from_utf8_lossy(&buf[r.clone()]).into_owned()
}

/// The message fields numbered `number` of the message in `range`.
fn messages(buf: &[u8], range: Range<usize>, number: u64) -> Result<Vec<Range<usize>>, UnsignedError> {
    Ok(fields(buf, range)?
        .into_iter()
        .filter_map(|(n, f)| match f {
            Field::Len(r) if n == number => Some(r),
            _ => None,
        })
        .collect())
}

/// `ModelProto.metadata_props[key]` of the serialized model `buf`.
pub fn metadata(buf: &[u8], key: &str) -> Result<Option<String>, UnsignedError> {
    for entry in messages(buf, 0..buf.len(), 14)? {
        let (mut k, mut v) = (None, None);
        for (n, f) in fields(buf, entry)? {
            match (n, f) {
                (1, Field::Len(r)) => k = Some(string(buf, &r)),
                (2, Field::Len(r)) => v = Some(string(buf, &r)),
                _ => {}
            }
        }
        if k.as_deref() == Some(key) {
            return Ok(v);
        }
    }
    Ok(None)
}

/// What [`to_unsigned`] changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewritten {
    /// Integer MatMuls whose weights are now uint8.
    pub matmuls: usize,
    /// Initializers rewritten (weights and weight zero points).
    pub initializers: usize,
}

/// The inputs of an integer MatMul that are its weights and its weight zero point.
fn weight_inputs(op: &str, domain: &str) -> Option<(usize, usize)> {
    match (domain, op) {
        ("com.microsoft", "MatMulIntegerToFloat") => Some((1, 5)),
        ("com.microsoft", "DynamicQuantizeMatMul") => Some((1, 3)),
        ("" | "ai.onnx", "MatMulInteger") => Some((1, 3)),
        _ => None,
    }
}

/// Rewrites, in place, the int8 weights of every integer MatMul of the serialized model
/// `buf` into uint8 with zero point 128 (module docs).
pub fn to_unsigned(buf: &mut [u8]) -> Result<Rewritten, UnsignedError> {
    let graphs = messages(buf, 0..buf.len(), 7)?;
    let [graph] = graphs.as_slice() else {
        return Err(UnsignedError::Malformed("a model needs exactly one graph"));
    };
    // initializers by name: (data_type value position and value, raw_data range)
    struct Init {
        data_type: Option<(u64, Range<usize>)>,
        raw: Option<Range<usize>>,
    }
    let mut inits: HashMap<String, Init> = HashMap::new();
    for t in messages(buf, graph.clone(), 5)? {
        let mut name = String::new();
        let mut init = Init {
            data_type: None,
            raw: None,
        };
        for (n, f) in fields(buf, t)? {
            match (n, f) {
                (2, Field::Varint { value, at }) => init.data_type = Some((value, at)),
                (8, Field::Len(r)) => name = string(buf, &r),
                (9, Field::Len(r)) => init.raw = Some(r),
                _ => {}
            }
        }
        inits.insert(name, init);
    }
    let is_int8 = |name: &str| inits.get(name).is_some_and(|i| matches!(i.data_type, Some((INT8, _))));

    let mut weights: HashSet<String> = HashSet::new();
    let mut other_reads: HashSet<String> = HashSet::new();
    let mut matmuls = 0;
    for node in messages(buf, graph.clone(), 1)? {
        let (mut inputs, mut op, mut domain, mut name) = (Vec::new(), String::new(), String::new(), String::new());
        for (n, f) in fields(buf, node)? {
            if let Field::Len(r) = f {
                match n {
                    1 => inputs.push(string(buf, &r)),
                    3 => name = string(buf, &r),
                    4 => op = string(buf, &r),
                    7 => domain = string(buf, &r),
                    _ => {}
                }
            }
        }
        match weight_inputs(&op, &domain) {
            Some((b, zp)) if inputs.get(b).is_some_and(|w| is_int8(w)) => {
                let zero_point = inputs.get(zp).filter(|z| is_int8(z));
                let Some(zero_point) = zero_point else {
                    return Err(UnsignedError::NoZeroPoint(name));
                };
                weights.insert(inputs[b].clone());
                weights.insert(zero_point.clone());
                matmuls += 1;
                other_reads.extend(
                    inputs
                        .iter()
                        .enumerate()
                        .filter(|(i, _)| *i != b && *i != zp)
                        .map(|(_, s)| s.clone()),
                );
            }
            _ => other_reads.extend(inputs),
        }
    }
    let mut names: Vec<&String> = weights.iter().collect();
    names.sort();
    // every weight checked before any byte changes: an error leaves `buf` as it was
    let mut flips = Vec::with_capacity(names.len());
    for w in &names {
        if other_reads.contains(*w) {
            return Err(UnsignedError::SharedWeight((*w).clone()));
        }
        let init = &inits[*w];
        let (Some(raw), Some((_, at))) = (init.raw.clone(), init.data_type.clone()) else {
            return Err(UnsignedError::NotRaw((*w).clone()));
        };
        // INT8 and UINT8 are both one-byte varints (unless written in a padded form)
        if at.len() != 1 {
            return Err(UnsignedError::Malformed("a data_type written in more than one byte"));
        }
        flips.push((at.start, raw));
    }
    for (data_type, raw) in flips {
        buf[data_type] = UINT8 as u8;
        for b in &mut buf[raw] {
            *b ^= 0x80;
        }
    }
    Ok(Rewritten {
        matmuls,
        initializers: names.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A protobuf length-delimited field.
    fn len(number: u64, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        push_varint(&mut out, number << 3 | 2);
        push_varint(&mut out, payload.len() as u64);
        out.extend_from_slice(payload);
        out
    }
    fn var(number: u64, value: u64) -> Vec<u8> {
        let mut out = Vec::new();
        push_varint(&mut out, number << 3);
        push_varint(&mut out, value);
        out
    }
    fn push_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn tensor(name: &str, data_type: u64, raw: &[u8]) -> Vec<u8> {
        [
            var(1, raw.len() as u64),
            var(2, data_type),
            len(8, name.as_bytes()),
            len(9, raw),
        ]
        .concat()
    }
    fn node(name: &str, op: &str, domain: &str, inputs: &[&str]) -> Vec<u8> {
        let mut out: Vec<u8> = inputs.iter().flat_map(|i| len(1, i.as_bytes())).collect();
        out.extend(len(2, b"y"));
        out.extend(len(3, name.as_bytes()));
        out.extend(len(4, op.as_bytes()));
        out.extend(len(7, domain.as_bytes()));
        out
    }
    fn model(nodes: &[Vec<u8>], inits: &[Vec<u8>]) -> Vec<u8> {
        let mut graph: Vec<u8> = nodes.iter().flat_map(|n| len(1, n)).collect();
        graph.extend(inits.iter().flat_map(|t| len(5, t)));
        let meta = [len(1, b"omnitok.int8_cpu"), len(2, b"x86-vnni")].concat();
        [var(1, 10), len(7, &graph), len(14, &meta)].concat()
    }

    #[test]
    fn int8_weights_and_zero_points_become_uint8_offset_by_128() {
        let mm = node(
            "mm",
            "MatMulIntegerToFloat",
            "com.microsoft",
            &["xq", "w", "xs", "ws", "xz", "wz"],
        );
        let dq = node("dq", "DynamicQuantizeMatMul", "com.microsoft", &["x", "w2", "ws", "wz"]);
        let add = node("add", "Add", "", &["y", "bias"]);
        let w = [0x80u8, 0xff, 0x00, 0x01, 0x7f]; // -128, -1, 0, 1, 127
        let mut buf = model(
            &[mm, dq, add],
            &[
                tensor("w", INT8, &w),
                tensor("w2", INT8, &[0x05]),
                tensor("wz", INT8, &[0x00]),
                tensor("bias", INT8, &[0x09]),
                tensor("xz", UINT8, &[0x80]),
            ],
        );
        assert_eq!(metadata(&buf, "omnitok.int8_cpu").unwrap().as_deref(), Some("x86-vnni"));
        let r = to_unsigned(&mut buf).unwrap();
        assert_eq!(
            r,
            Rewritten {
                matmuls: 2,
                initializers: 3
            }
        );
        let find = |buf: &[u8], want: &[u8]| buf.windows(want.len()).any(|s| s == want);
        // -128..127 as offset binary: 0, 127, 128, 129, 255; data_type 2
        assert!(find(&buf, &tensor("w", UINT8, &[0x00, 0x7f, 0x80, 0x81, 0xff])));
        assert!(find(&buf, &tensor("w2", UINT8, &[0x85])));
        assert!(find(&buf, &tensor("wz", UINT8, &[0x80])));
        // untouched: an int8 tensor another node reads, and the activation zero point
        assert!(find(&buf, &tensor("bias", INT8, &[0x09])));
        assert!(find(&buf, &tensor("xz", UINT8, &[0x80])));
        // a second pass finds no int8 weights left
        let before = buf.clone();
        assert_eq!(to_unsigned(&mut buf).unwrap().matmuls, 0);
        assert_eq!(buf, before);
    }

    #[test]
    fn graphs_it_cannot_rewrite_exactly_are_refused() {
        let w = tensor("w", INT8, &[1, 2]);
        // no weight zero point
        let mm = node(
            "mm",
            "MatMulIntegerToFloat",
            "com.microsoft",
            &["xq", "w", "xs", "ws", "xz"],
        );
        let mut buf = model(&[mm], std::slice::from_ref(&w));
        let e = to_unsigned(&mut buf).unwrap_err();
        assert_eq!(e, UnsignedError::NoZeroPoint("mm".into()));
        assert!(e.to_string().contains("export it again"), "{e}");
        // a weight another node reads too
        let mm = node("mm", "DynamicQuantizeMatMul", "com.microsoft", &["x", "w", "ws", "wz"]);
        let other = node("cast", "Cast", "", &["w"]);
        let mut buf = model(&[mm.clone(), other], &[w.clone(), tensor("wz", INT8, &[0])]);
        assert_eq!(to_unsigned(&mut buf), Err(UnsignedError::SharedWeight("w".into())));
        // ... or its zero point, found after the weight: the weight is left untouched too
        let other = node("cast", "Cast", "", &["wz"]);
        let mut buf = model(&[mm, other], &[w, tensor("wz", INT8, &[0])]);
        let before = buf.clone();
        assert_eq!(to_unsigned(&mut buf), Err(UnsignedError::SharedWeight("wz".into())));
        assert_eq!(buf, before, "a refused graph is left as it was");
        // truncated or garbage bytes: an error, never a panic
        let good = model(&[], &[]);
        for cut in 0..good.len() {
            let mut b = good[..cut].to_vec();
            let _ = to_unsigned(&mut b);
            let _ = metadata(&b, "omnitok.int8_cpu");
        }
        let mut junk = vec![0xffu8; 64];
        assert!(to_unsigned(&mut junk).is_err());
    }
}
