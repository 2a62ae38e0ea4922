//! Torch zip archives (`torch.save` since 1.6, PyTorch-Lightning `.ckpt`):
//! `<name>/data.pkl` (the pickled object), `<name>/data/<key>` (one record per
//! storage, stored uncompressed), `<name>/byteorder` (optional, `little`).
//!
//! The pickle is read through the zip reader (CRC-checked); the storage records
//! are then read straight from the file at their data offsets, in file order,
//! during the single hashing pass.

use std::collections::BTreeMap;
use std::io::Read;
use std::rc::Rc;

use anyhow::{Context, Result, anyhow, bail};
use zip::{CompressionMethod, ZipArchive};

use super::convert::{Decoder, check_len, gather, is_contiguous, max_index, numel, to_usize};
use super::pickle::{self, DictObj, GlobalKind, Obj, TensorRef, Unpickled, Value};
use super::stream::{HashedFile, Input};
use super::{Checkpoint, DType, Format, HyperValue, Tensor, TensorData, is_training_only};

/// How many more elements than the file has bytes the tensor views may expand to.
const MAX_EXPANSION: u64 = 1 << 24;

/// A state-dict key and its tensor view.
type Named = (String, Rc<TensorRef>);

/// One tensor to materialise.
struct Wanted {
    name: String,
    dtype: DType,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

/// One storage record to read: the element span its tensors need.
struct SpanRead {
    /// Absolute file offset of the span's first byte.
    file_start: u64,
    dtype: DType,
    /// First storage element of the span, and its length in elements.
    span_start: usize,
    span_len: usize,
    tensors: Vec<Wanted>,
}

/// What `data.pkl` holds: the inference tensors' views grouped by storage record key,
/// the hyper-parameters, and how many training-only tensors were left out.
pub(crate) struct Contents {
    by_key: BTreeMap<String, (Rc<pickle::StorageRef>, Vec<Named>)>,
    hyper_parameters: Option<BTreeMap<String, HyperValue>>,
    skipped: usize,
}

/// Unpickles and interprets `data.pkl`: a Lightning checkpoint (weights under
/// "state_dict", "hyper_parameters") or a bare `torch.save(model.state_dict())`.
pub(crate) fn read_pickle(pkl: &[u8]) -> Result<Contents> {
    let u = pickle::unpickle(pkl, "data.pkl")?;
    let root = u
        .dict(&u.root)
        .ok_or_else(|| anyhow!("data.pkl holds a {}, not a dict", u.root.kind(&u.objs)))?;
    let state_dict = match root.get("state_dict") {
        Some(v) => u
            .dict(v)
            .ok_or_else(|| anyhow!("data.pkl's \"state_dict\" is a {}, not a dict", v.kind(&u.objs)))?,
        None => root,
    };
    let hyper_parameters = match root.get("hyper_parameters") {
        Some(v) => hyper_parameters(&u, v, hyper_value_budget(pkl.len()))?,
        None => None,
    };
    let mut skipped = 0;
    let mut by_key: BTreeMap<String, (Rc<pickle::StorageRef>, Vec<Named>)> = BTreeMap::new();
    for (k, v) in &state_dict.entries {
        let Value::Tensor(t) = v else { continue };
        let Some(name) = k.as_str() else {
            bail!("data.pkl's state dict has a {} key", k.kind(&u.objs));
        };
        if is_training_only(name) {
            skipped += 1;
            continue;
        }
        by_key
            .entry(t.storage.key.clone())
            .or_insert_with(|| (t.storage.clone(), Vec::new()))
            .1
            .push((name.to_string(), t.clone()));
    }
    Ok(Contents {
        by_key,
        hyper_parameters,
        skipped,
    })
}

pub(crate) fn load(input: Input, progress: &mut dyn FnMut(u64, u64)) -> Result<Checkpoint> {
    let mut zip = ZipArchive::new(input.open()?).map_err(|e| {
        anyhow!("it starts like a zip archive but cannot be read as one ({e}); it may be truncated or corrupt")
    })?;

    let prefix = find_prefix(&zip)?;
    let big_endian = match read_small(&mut zip, &format!("{prefix}byteorder"))? {
        None => false,
        Some(b) => match String::from_utf8_lossy(&b).trim() {
            "little" => false,
            "big" => true,
            other => bail!("{prefix}byteorder says '{other}', neither 'little' nor 'big'"),
        },
    };
    let pkl_name = format!("{prefix}data.pkl");
    let pkl = read_small(&mut zip, &pkl_name)?.ok_or_else(|| anyhow!("the archive lacks {pkl_name}"))?;
    let Contents {
        by_key,
        hyper_parameters,
        skipped,
    } = read_pickle(&pkl)?;

    // Plan the reads: one per storage record.
    let mut reads = Vec::with_capacity(by_key.len());
    for (key, (storage, tensors)) in by_key {
        reads.push(plan_read(&mut zip, &prefix, &key, &storage, tensors)?);
    }
    drop(zip);
    reads.sort_by_key(|r| r.file_start);

    // Broadcast views (stride 0) can expand a few stored bytes into many
    // elements; a checkpoint has no reason to do that on a large scale.
    let file_len = input.len()?;
    let mut total = 0u64;
    for w in reads.iter().flat_map(|r| &r.tensors) {
        total = total.saturating_add(w.size.iter().map(|&n| n as u64).product());
    }
    if total > file_len.saturating_add(MAX_EXPANSION) {
        bail!(
            "its tensor views add up to {total} elements, far more than a {file_len}-byte file \
             holds; refusing"
        );
    }

    // One pass over the file: hash everything, decode the planned spans.
    let mut f = HashedFile::open(input, progress)?;
    let mut tensors = BTreeMap::new();
    for r in reads {
        if r.span_len > 0 {
            f.skip_to(r.file_start)?;
        }
        let es = r.dtype.size_bytes();
        let span_bytes = (r.span_len as u64) * es as u64;
        let single_contiguous = r.tensors.len() == 1
            && is_contiguous(&r.tensors[0].size, &r.tensors[0].stride)
            && r.tensors[0].offset == r.span_start;
        if single_contiguous {
            // Stream straight into the tensor.
            let w = &r.tensors[0];
            let mut dec =
                Decoder::new(r.dtype, big_endian, r.span_len).with_context(|| format!("tensor '{}'", w.name))?;
            f.read(span_bytes, &mut |c| dec.push(c))
                .with_context(|| format!("reading tensor '{}'", w.name))?;
            insert(&mut tensors, w, dec.finish());
        } else {
            // Shared storage or a strided view: read the span once, then copy
            // each view out of it.
            let span = f.read_vec(span_bytes)?;
            for w in &r.tensors {
                let data = gather(r.dtype, big_endian, &span, r.span_start, w.offset, &w.size, &w.stride)
                    .with_context(|| format!("tensor '{}'", w.name))?;
                insert(&mut tensors, w, data);
            }
        }
    }
    let sha256 = f.finish()?;
    Ok(Checkpoint {
        format: Format::Torch,
        tensors,
        hyper_parameters,
        sha256,
        skipped,
    })
}

fn insert(tensors: &mut BTreeMap<String, Tensor>, w: &Wanted, data: TensorData) {
    tensors.insert(
        w.name.clone(),
        Tensor {
            dtype: w.dtype,
            shape: w.size.clone(),
            data,
        },
    );
}

/// The archive's top folder (`<name>/`), found from its `data.pkl`.
fn find_prefix<R: Read + std::io::Seek>(zip: &ZipArchive<R>) -> Result<String> {
    let mut found = Vec::new();
    for name in zip.file_names_raw() {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if let Some(prefix) = name.strip_suffix("data.pkl")
            && (prefix.is_empty() || (prefix.ends_with('/') && prefix.matches('/').count() == 1))
        {
            found.push(prefix.to_string());
        }
    }
    match found.len() {
        0 => {
            bail!("it is a zip archive without a <name>/data.pkl record, so not a torch checkpoint")
        }
        1 => Ok(found.remove(0)),
        _ => bail!("the archive holds several data.pkl records: {found:?}"),
    }
}

/// Reads a small record through the zip reader (decompressed, CRC-checked).
fn read_small<R: Read + std::io::Seek>(zip: &mut ZipArchive<R>, name: &str) -> Result<Option<Vec<u8>>> {
    let Some(i) = zip.index_for_name(name) else {
        return Ok(None);
    };
    let mut f = zip.by_index(i).map_err(|e| anyhow!("cannot read {name}: {e}"))?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)
        .map_err(|e| anyhow!("cannot read {name}: {e}"))?;
    Ok(Some(out))
}

fn plan_read<R: Read + std::io::Seek>(
    zip: &mut ZipArchive<R>,
    prefix: &str,
    key: &str,
    storage: &pickle::StorageRef,
    tensors: Vec<Named>,
) -> Result<SpanRead> {
    let record = format!("{prefix}data/{key}");
    let first = &tensors[0].0;
    let Some(dtype) = storage.dtype else {
        bail!(
            "tensor '{first}' is stored as {}, which is not supported (Float, Half, BFloat16, \
             Double, Long, Int, Byte and Bool storages are)",
            storage.type_name
        );
    };
    let es = dtype.size_bytes();
    if tensors.iter().all(|(_, t)| t.size.contains(&0)) {
        // Only empty views: nothing to read (the record may even be absent).
        let tensors = tensors
            .into_iter()
            .map(|(name, t)| {
                Ok(Wanted {
                    name,
                    dtype,
                    offset: 0,
                    size: to_usize(&t.size)?,
                    stride: to_usize(&t.stride)?,
                })
            })
            .collect::<Result<_>>()?;
        return Ok(SpanRead {
            file_start: 0,
            dtype,
            span_start: 0,
            span_len: 0,
            tensors,
        });
    }
    let index = zip.index_for_name(&record).ok_or_else(|| {
        anyhow!("data.pkl refers to storage record '{record}' (tensor '{first}'), which the archive lacks")
    })?;
    let entry = zip
        .by_index_raw(index)
        .map_err(|e| anyhow!("cannot locate storage record '{record}': {e}"))?;
    if entry.compression() != CompressionMethod::Stored {
        bail!(
            "storage record '{record}' is compressed ({}); torch archives store records uncompressed",
            entry.compression()
        );
    }
    if entry.encrypted() {
        bail!("storage record '{record}' is encrypted");
    }
    let data_start = entry
        .data_start()
        .ok_or_else(|| anyhow!("cannot locate the data of storage record '{record}'"))?;
    let bytes = entry.size();
    if entry.compressed_size() != bytes {
        bail!("storage record '{record}' has inconsistent sizes");
    }
    drop(entry);
    let elems = check_len(bytes, dtype).with_context(|| format!("storage record '{record}'"))?;
    if elems < storage.numel {
        bail!(
            "storage record '{record}' holds {bytes} bytes, but data.pkl declares {} {dtype:?} \
             elements ({} bytes); the archive is damaged",
            storage.numel,
            storage.numel.saturating_mul(es as u64)
        );
    }
    let elems = usize::try_from(elems)?;

    let mut span: Option<(usize, usize)> = None;
    let mut wanted = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let offset = usize::try_from(t.offset)?;
        let size = to_usize(&t.size)?;
        let stride = to_usize(&t.stride)?;
        numel(&size).with_context(|| format!("tensor '{name}'"))?;
        if let Some(last) = max_index(offset, &size, &stride).with_context(|| format!("tensor '{name}'"))? {
            if last >= elems {
                bail!(
                    "tensor '{name}' (shape {size:?}, stride {stride:?}, offset {offset}) needs \
                     element {last} of storage record '{record}', which holds only {elems} \
                     {dtype:?} elements"
                );
            }
            span = Some(match span {
                None => (offset, last + 1),
                Some((a, b)) => (a.min(offset), b.max(last + 1)),
            });
        }
        wanted.push(Wanted {
            name,
            dtype,
            offset,
            size,
            stride,
        });
    }
    let (span_start, span_end) = span.unwrap_or((0, 0));
    Ok(SpanRead {
        file_start: data_start + (span_start as u64) * es as u64,
        dtype,
        span_start,
        span_len: span_end - span_start,
        tensors: wanted,
    })
}

/// Lightning's `hyper_parameters`: an `AttributeDict` whose `args` is an
/// `argparse.Namespace`; the Namespace's fields are returned flattened, followed
/// by any other top-level entries they do not shadow. Hyper-parameters held
/// directly (without a Namespace) are returned as they are.
fn hyper_parameters(u: &Unpickled, v: &Value, budget: usize) -> Result<Option<BTreeMap<String, HyperValue>>> {
    let mut out = BTreeMap::new();
    let mut conv = Hyper {
        u,
        budget,
        left: budget,
    };
    let top: Vec<&DictObj> = if let Some(d) = u.dict(v) {
        vec![d]
    } else if let Some(inst) = u.instance(v) {
        u.instance_attrs(inst)
    } else if matches!(v, Value::None) {
        return Ok(None);
    } else {
        bail!("data.pkl's \"hyper_parameters\" is a {}", v.kind(&u.objs));
    };
    for d in &top {
        if let Some(args) = d.get("args")
            && let Some(inst) = u.instance(args)
            && inst.class.kind == GlobalKind::Namespace
        {
            for attrs in u.instance_attrs(inst) {
                for (k, v) in &attrs.entries {
                    out.insert(key_string(u, k), conv.value(v, 0)?);
                }
            }
        }
    }
    for d in &top {
        for (k, v) in &d.entries {
            let k = key_string(u, k);
            let is_namespace = |v: &Value| u.instance(v).is_some_and(|i| i.class.kind == GlobalKind::Namespace);
            if (k == "args" && is_namespace(v)) || out.contains_key(&k) {
                continue;
            }
            out.insert(k, conv.value(v, 0)?);
        }
    }
    Ok(Some(out))
}

fn key_string(u: &Unpickled, k: &Value) -> String {
    match k {
        Value::Str(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        Value::None => "None".to_string(),
        Value::Float(f) => f.to_string(),
        other => format!("<{}>", other.kind(&u.objs)),
    }
}

/// Most values a hyper-parameter conversion of a `pickle_len`-byte pickle produces:
/// shared sub-objects are expanded, so a small pickle could otherwise ask for
/// exponentially many. A few per byte (each pickled value takes at least one byte).
fn hyper_value_budget(pickle_len: usize) -> usize {
    pickle_len.saturating_mul(4).saturating_add(10_000).min(1_000_000)
}

/// Converts pickled values to [`HyperValue`]s. Values with no counterpart
/// (tensors, opaque objects) become a description in angle brackets.
struct Hyper<'a> {
    u: &'a Unpickled,
    budget: usize,
    left: usize,
}

impl Hyper<'_> {
    fn pairs<'v>(&mut self, entries: impl Iterator<Item = &'v (Value, Value)>, depth: usize) -> Result<HyperValue> {
        let mut out = BTreeMap::new();
        for (k, v) in entries {
            out.insert(key_string(self.u, k), self.value(v, depth + 1)?);
        }
        Ok(HyperValue::Dict(out))
    }

    fn list(&mut self, items: &[Value], depth: usize) -> Result<HyperValue> {
        let out = items.iter().map(|x| self.value(x, depth + 1)).collect::<Result<_>>()?;
        Ok(HyperValue::List(out))
    }

    fn value(&mut self, v: &Value, depth: usize) -> Result<HyperValue> {
        let u = self.u;
        let cost = match v {
            Value::Bytes(b) => b.len() + 1,
            _ => 1,
        };
        self.left = self
            .left
            .checked_sub(cost)
            .ok_or_else(|| anyhow!("data.pkl's hyper_parameters expand to more than {} values", self.budget))?;
        if depth > 32 {
            return Ok(HyperValue::Str("<nested too deeply>".into()));
        }
        Ok(match v {
            Value::None => HyperValue::None,
            Value::Bool(b) => HyperValue::Bool(*b),
            Value::Int(i) => HyperValue::Int(*i),
            // Decimal conversion is quadratic in the length: only for plausible integers.
            Value::BigInt(b) if b.len() <= MAX_DECIMAL_BYTES => HyperValue::Str(big_int_decimal(b)),
            Value::BigInt(b) => HyperValue::Str(format!("<int of {} bytes>", b.len())),
            Value::Float(f) => HyperValue::Float(*f),
            Value::Str(s) => HyperValue::Str(s.to_string()),
            Value::Bytes(b) => HyperValue::List(b.iter().map(|&x| HyperValue::Int(x.into())).collect()),
            Value::Tuple(t) => self.list(t, depth)?,
            Value::Obj(id) => match u.objs.get(*id) {
                Some(Obj::List(l) | Obj::Set(l)) => self.list(l, depth)?,
                Some(Obj::Dict(d)) => self.pairs(d.entries.iter(), depth)?,
                Some(Obj::Instance(inst)) if inst.class.kind == GlobalKind::Namespace => {
                    let attrs = u.instance_attrs(inst);
                    self.pairs(attrs.into_iter().flat_map(|d| d.entries.iter()), depth)?
                }
                _ => HyperValue::Str(format!("<{}>", v.kind(&u.objs))),
            },
            Value::Global(g) => HyperValue::Str(format!("<{}>", g.name)),
            Value::Storage(_) | Value::Tensor(_) => HyperValue::Str(format!("<{}>", v.kind(&u.objs))),
        })
    }
}

/// Longest integer (in bytes, 154 decimal digits) a hyper-parameter shows as decimal text.
const MAX_DECIMAL_BYTES: usize = 64;

/// Decimal text of a little-endian two's complement integer.
fn big_int_decimal(le: &[u8]) -> String {
    let negative = le.last().is_some_and(|b| b & 0x80 != 0);
    // Magnitude, big-endian.
    let mut mag: Vec<u8> = le.iter().rev().copied().collect();
    if negative {
        for b in mag.iter_mut() {
            *b = !*b;
        }
        for b in mag.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
    }
    let mut digits = Vec::new();
    while mag.iter().any(|&b| b != 0) {
        let mut rem = 0u32;
        for b in mag.iter_mut() {
            let cur = (rem << 8) | u32::from(*b);
            *b = (cur / 10) as u8;
            rem = cur % 10;
        }
        digits.push(b'0' + rem as u8);
    }
    if digits.is_empty() {
        digits.push(b'0');
    }
    if negative {
        digits.push(b'-');
    }
    digits.reverse();
    String::from_utf8_lossy(&digits).into_owned()
}

#[cfg(test)]
mod tests {
    use super::super::pickle::build::P;
    use super::super::tests::load_err;
    use super::super::{TensorData, load};
    use super::*;
    use crate::test_support::{TempFile, golden, torch_archive};

    fn archive(name: &str, entries: &[(&str, &[u8])]) -> TempFile {
        TempFile::with(name, &torch_archive(entries))
    }

    fn f32_bytes(v: impl IntoIterator<Item = f32>) -> Vec<u8> {
        v.into_iter().flat_map(f32::to_le_bytes).collect()
    }

    /// `{'state_dict': OrderedDict(entries...), 'hyper_parameters': AttributeDict(args=Namespace(heads=2))}`
    fn lightning_pickle(tensors: impl FnOnce(P) -> P) -> Vec<u8> {
        let p = P::new()
            .empty_dict()
            .mark()
            .str("state_dict")
            .global("collections", "OrderedDict")
            .empty_tuple()
            .reduce()
            .mark();
        tensors(p)
            .setitems()
            .str("hyper_parameters")
            .global("lightning_fabric.utilities.data", "AttributeDict")
            .empty_tuple()
            .op(0x81)
            .str("args")
            .global("argparse", "Namespace")
            .empty_tuple()
            .op(0x81)
            .empty_dict()
            .mark()
            .str("heads")
            .int(2)
            .str("batch_size")
            .mark()
            .int(4)
            .int(8)
            .op(b'l')
            .str("spatial_pos")
            .op(b'N')
            .setitems()
            .op(b'b')
            .op(b's')
            .setitems()
            .stop()
    }

    #[test]
    fn views_share_storage_with_offset_and_stride() {
        let pkl = lightning_pickle(|p| {
            p.str("a")
                // rows 1..3 of a 4x3 matrix
                .tensor(("FloatStorage", "0", "cuda:0", 12), (3, &[2, 3], &[3, 1]))
                .str("at")
                // its transpose, as a view
                .tensor(("FloatStorage", "0", "cuda:0", 12), (0, &[3, 4], &[1, 3]))
                .str("s")
                .tensor(("FloatStorage", "0", "cuda:0", 12), (11, &[], &[]))
                .str("b")
                // alone in its storage but not starting at 0
                .tensor(("LongStorage", "1", "cpu", 3), (1, &[2], &[1]))
                .str("codebook.z_avg")
                .tensor(("FloatStorage", "2", "cpu", 2), (0, &[2], &[1]))
        });
        let storage0 = f32_bytes((0..12).map(|i| i as f32));
        let storage1: Vec<u8> = [5i64, -6, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
        let t = archive(
            "views.ckpt",
            &[
                ("archive/data.pkl", &pkl),
                ("archive/byteorder", b"little"),
                ("archive/data/0", &storage0),
                ("archive/data/1", &storage1),
                // "archive/data/2" (training-only) is absent: it must not be read.
            ],
        );
        let mut calls = Vec::new();
        let ck = load(&t.path, &mut |d, n| calls.push((d, n))).unwrap();
        let len = std::fs::metadata(&t.path).unwrap().len();
        assert_eq!(calls.first(), Some(&(0, len)));
        assert_eq!(calls.last(), Some(&(len, len)));
        assert_eq!(ck.skipped, 1);
        assert_eq!(ck.tensors.len(), 4);
        assert_eq!(ck.tensors["a"].shape, [2, 3]);
        assert_eq!(ck.tensors["a"].data, TensorData::F32(vec![3., 4., 5., 6., 7., 8.]));
        assert_eq!(ck.tensors["at"].shape, [3, 4]);
        assert_eq!(
            ck.tensors["at"].data,
            TensorData::F32(vec![0., 3., 6., 9., 1., 4., 7., 10., 2., 5., 8., 11.])
        );
        assert_eq!(ck.tensors["s"].data, TensorData::F32(vec![11.]));
        assert_eq!(ck.tensors["b"].data, TensorData::I64(vec![-6, 7]));
        assert_eq!(ck.tensors["b"].dtype, DType::I64);
        let hp = ck.hyper_parameters.unwrap();
        assert_eq!(hp["heads"], HyperValue::Int(2));
        assert_eq!(
            hp["batch_size"],
            HyperValue::List(vec![HyperValue::Int(4), HyperValue::Int(8)])
        );
        assert_eq!(hp["spatial_pos"], HyperValue::None);
        assert!(!hp.contains_key("args"));
    }

    #[test]
    fn big_endian_archives_and_plain_state_dicts() {
        // A bare state dict (no Lightning wrapper), big-endian, half storage.
        let pkl = P::new()
            .global("collections", "OrderedDict")
            .empty_tuple()
            .reduce()
            .mark()
            .str("w")
            .tensor(("HalfStorage", "0", "cpu", 2), (0, &[2], &[1]))
            .setitems()
            .stop();
        let t = archive(
            "be.pt",
            &[
                ("m/data.pkl", &pkl),
                ("m/byteorder", b"big"),
                ("m/data/0", &[0x3c, 0x00, 0xc0, 0x00]),
            ],
        );
        let ck = load(&t.path, &mut |_, _| {}).unwrap();
        assert_eq!(ck.tensors["w"].data, TensorData::F32(vec![1.0, -2.0]));
        assert!(ck.hyper_parameters.is_none());
    }

    #[test]
    fn hyper_parameters_held_directly() {
        let pkl = P::new()
            .empty_dict()
            .mark()
            .str("state_dict")
            .empty_dict()
            .str("hyper_parameters")
            .global("pytorch_lightning.utilities.parsing", "AttributeDict")
            .empty_tuple()
            .op(0x81)
            .mark()
            .str("lr")
            .float(0.5)
            .str("name")
            .str("x")
            .str("flag")
            .op(0x88)
            .setitems()
            .setitems()
            .stop();
        let t = archive("direct.ckpt", &[("a/data.pkl", &pkl)]);
        let ck = load(&t.path, &mut |_, _| {}).unwrap();
        let hp = ck.hyper_parameters.unwrap();
        assert_eq!(hp["lr"], HyperValue::Float(0.5));
        assert_eq!(hp["name"], HyperValue::Str("x".into()));
        assert_eq!(hp["flag"], HyperValue::Bool(true));
        assert!(ck.tensors.is_empty());
    }

    #[test]
    fn foreign_global_in_archive_names_global_and_file() {
        let pkl = b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.";
        let t = archive("evil.ckpt", &[("evil/data.pkl", pkl)]);
        let e = load_err(&t);
        assert!(
            e.contains("data.pkl names global 'os.system', which a checkpoint never needs; refusing to load"),
            "{e}"
        );
    }

    #[test]
    fn damaged_archives_are_clear_errors() {
        let good = lightning_pickle(|p| p.str("w").tensor(("FloatStorage", "0", "cpu", 4), (0, &[4], &[1])));
        let storage = f32_bytes([1., 2., 3., 4.]);

        let t = archive("nopkl.ckpt", &[("x/data/0", &storage)]);
        let e = load_err(&t);
        assert!(e.contains("without a <name>/data.pkl"), "{e}");

        let t = archive("nostorage.ckpt", &[("x/data.pkl", &good)]);
        let e = load_err(&t);
        assert!(
            e.contains("storage record 'x/data/0' (tensor 'w'), which the archive lacks"),
            "{e}"
        );

        let t = archive(
            "truncpkl.ckpt",
            &[("x/data.pkl", &good[..good.len() / 2]), ("x/data/0", &storage)],
        );
        let e = load_err(&t);
        assert!(e.contains("data.pkl is truncated"), "{e}");

        // The view needs 4 elements; the record (and the pickle) say 3.
        let short = lightning_pickle(|p| p.str("w").tensor(("FloatStorage", "0", "cpu", 3), (0, &[4], &[1])));
        let t = archive("short.ckpt", &[("x/data.pkl", &short), ("x/data/0", &storage[..12])]);
        let e = load_err(&t);
        assert!(
            e.contains("needs element 3 of storage record 'x/data/0', which holds only 3"),
            "{e}"
        );

        // The record is shorter than the pickle declares.
        let t = archive("shortrec.ckpt", &[("x/data.pkl", &good), ("x/data/0", &storage[..8])]);
        let e = load_err(&t);
        assert!(e.contains("holds 8 bytes, but data.pkl declares 4"), "{e}");

        // A record that is not whole elements.
        let t = archive("ragged.ckpt", &[("x/data.pkl", &good), ("x/data/0", &storage[..15])]);
        let e = load_err(&t);
        assert!(e.contains("not a whole number"), "{e}");

        let t = archive("badorder.ckpt", &[("x/data.pkl", &good), ("x/byteorder", b"middle")]);
        let e = load_err(&t);
        assert!(e.contains("neither 'little' nor 'big'"), "{e}");

        // Unsupported storage type, needed vs. training-only.
        let cx = lightning_pickle(|p| {
            p.str("w")
                .tensor(("ComplexFloatStorage", "0", "cpu", 2), (0, &[2], &[1]))
        });
        let t = archive("complex.ckpt", &[("x/data.pkl", &cx), ("x/data/0", &storage)]);
        let e = load_err(&t);
        assert!(e.contains("torch.ComplexFloatStorage, which is not supported"), "{e}");
        let cx = lightning_pickle(|p| {
            p.str("video_discriminator.w")
                .tensor(("ComplexFloatStorage", "0", "cpu", 2), (0, &[2], &[1]))
        });
        let t = archive("complex_skip.ckpt", &[("x/data.pkl", &cx)]);
        let ck = load(&t.path, &mut |_, _| {}).unwrap();
        assert_eq!((ck.skipped, ck.tensors.len()), (1, 0));
    }

    #[test]
    fn truncated_and_garbage_files_are_clear_errors() {
        // Garbage that starts like a zip archive.
        let t = TempFile::with("garbage.ckpt", b"PK\x03\x04this is not really a zip archive at all");
        let e = load_err(&t);
        assert!(e.contains("cannot be read as one"), "{e}");

        let Some(path) = golden("rope_vq.ckpt") else {
            return;
        };
        let bytes = std::fs::read(path).unwrap();
        let t = TempFile::with("half.ckpt", &bytes[..bytes.len() / 2]);
        let e = load_err(&t);
        assert!(e.contains("truncated or corrupt"), "{e}");
        // Damage in the middle of data.pkl (found by its record name in the archive).
        let mut bad = bytes.clone();
        let at = bytes.windows(8).position(|w| w == b"data.pkl").unwrap() + 200;
        bad[at..at + 64].fill(0xee);
        let t = TempFile::with("pkl_damaged.ckpt", &bad);
        let e = load_err(&t);
        assert!(e.contains("data.pkl"), "{e}");
    }

    #[test]
    fn empty_and_broadcast_views() {
        let pkl = lightning_pickle(|p| {
            p.str("empty")
                .tensor(("FloatStorage", "9", "cpu", 0), (0, &[0, 4], &[4, 1]))
                .str("bcast")
                .tensor(("FloatStorage", "0", "cpu", 2), (1, &[3, 2], &[0, 0]))
        });
        // Record 9 (empty) is absent: it need not be read.
        let t = archive(
            "bcast.ckpt",
            &[("x/data.pkl", &pkl), ("x/data/0", &f32_bytes([1., 2.]))],
        );
        let ck = load(&t.path, &mut |_, _| {}).unwrap();
        assert_eq!(ck.tensors["empty"].shape, [0, 4]);
        assert!(ck.tensors["empty"].data.is_empty());
        assert_eq!(ck.tensors["bcast"].data, TensorData::F32(vec![2.0; 6]));

        // A broadcast view that would expand 4 bytes into 2^30 elements.
        let pkl = lightning_pickle(|p| {
            p.str("w")
                .tensor(("FloatStorage", "0", "cpu", 1), (0, &[1 << 15, 1 << 15], &[0, 0]))
        });
        let t = archive("bomb.ckpt", &[("x/data.pkl", &pkl), ("x/data/0", &f32_bytes([1.]))]);
        let e = load_err(&t);
        assert!(e.contains("add up to 1073741824 elements"), "{e}");
    }

    /// `{'hyper_parameters': {'x': l}}` with l0 = [None, None], l(k+1) = [lk, lk]: 2^(levels+1)
    /// values from a pickle of a few bytes per level.
    fn doubling_pickle(levels: usize) -> Vec<u8> {
        let mut p = P::new()
            .empty_dict()
            .str("hyper_parameters")
            .empty_dict()
            .str("x")
            .mark()
            .op(b'N')
            .op(b'N')
            .op(b'l');
        for _ in 0..levels {
            p = p.put(0).op(b'0').mark().get(0).get(0).op(b'l');
        }
        p.op(b's').op(b's').stop()
    }

    #[test]
    fn hyper_parameter_expansion_bombs_are_refused() {
        let pkl = doubling_pickle(40);
        let t = archive("laughs.ckpt", &[("x/data.pkl", &pkl)]);
        let e = load_err(&t);
        assert!(e.contains("expand to more than"), "{e}");
    }

    #[test]
    fn hyper_parameter_expansion_is_bounded_by_the_pickle_size() {
        // 15 doublings: 65,536 values from a pickle of about 150 bytes, which took
        // tenths of a second when any pickle could expand to a million values
        let doubled = doubling_pickle;
        let small = doubled(15);
        let e = format!("{:#}", read_pickle(&small).err().unwrap());
        assert!(
            e.contains(&format!("expand to more than {} values", 4 * small.len() + 10_000)),
            "{e}"
        );
        // a few doublings stay well within it
        assert!(read_pickle(&doubled(8)).is_ok());
    }

    #[test]
    fn huge_integers_are_not_converted_to_decimal() {
        // a 100 kB LONG4 in hyper_parameters: decimal text would take minutes
        let mut long4 = vec![0x8b];
        long4.extend_from_slice(&100_000i32.to_le_bytes());
        long4.extend(std::iter::repeat_n(0x5a, 100_000));
        let pkl = P::new()
            .empty_dict()
            .str("hyper_parameters")
            .empty_dict()
            .str("big")
            .raw(&long4)
            .op(b's')
            .str("fine")
            .raw(&[0x8a, 9, 0, 0, 0, 0, 0, 0, 0, 0, 1])
            .op(b's')
            .op(b's')
            .stop();
        let t0 = std::time::Instant::now();
        let hp = read_pickle(&pkl).unwrap().hyper_parameters.unwrap();
        assert!(t0.elapsed().as_secs() < 5);
        assert_eq!(hp["big"], HyperValue::Str("<int of 100000 bytes>".into()));
        assert_eq!(hp["fine"], HyperValue::Str("18446744073709551616".into()));
    }

    /// xorshift64: deterministic "random" mutations.
    fn mutate(data: &mut [u8], seed: &mut u64, flips: usize) {
        for _ in 0..flips {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            let i = (*seed % data.len() as u64) as usize;
            data[i] = (*seed >> 40) as u8;
        }
    }

    #[test]
    fn mutated_pickles_in_archives_never_panic() {
        let pkl = lightning_pickle(|p| {
            p.str("a")
                .tensor(("FloatStorage", "0", "cuda:0", 12), (3, &[2, 3], &[3, 1]))
                .str("at")
                .tensor(("FloatStorage", "0", "cuda:0", 12), (0, &[3, 4], &[1, 3]))
                .str("b")
                .tensor(("LongStorage", "1", "cpu", 3), (1, &[2], &[1]))
        });
        let storage0 = f32_bytes((0..12).map(|i| i as f32));
        let storage1 = [0u8; 24];
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut outcomes = (0, 0);
        for round in 0..600 {
            let mut p = pkl.clone();
            mutate(&mut p, &mut seed, 1 + round % 3);
            let t = archive(
                "mutated.ckpt",
                &[("x/data.pkl", &p), ("x/data/0", &storage0), ("x/data/1", &storage1)],
            );
            match load(&t.path, &mut |_, _| {}) {
                Ok(_) => outcomes.0 += 1,
                Err(_) => outcomes.1 += 1,
            }
        }
        assert!(outcomes.0 > 0 && outcomes.1 > 0, "{outcomes:?}");
    }

    #[test]
    fn mutated_golden_pickle_never_panics() {
        let Some(path) = golden("rope_vq.ckpt") else {
            return;
        };
        let mut zip = ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
        let pkl = read_small(&mut zip, "rope_vq/data.pkl").unwrap().unwrap();
        assert!(read_pickle(&pkl).unwrap().hyper_parameters.is_some());
        let mut seed = 0x0bad_5eed_dead_beefu64;
        for round in 0..400 {
            let mut p = pkl.clone();
            mutate(&mut p, &mut seed, 1 + round % 4);
            let _ = read_pickle(&p);
        }
    }

    #[test]
    fn big_int_text() {
        assert_eq!(big_int_decimal(&[0, 0, 0, 0, 0, 0, 0, 0, 1]), "18446744073709551616");
        assert_eq!(
            big_int_decimal(&[0, 0, 0, 0, 0, 0, 0, 0, 0xff]),
            "-18446744073709551616"
        );
        assert_eq!(big_int_decimal(&[]), "0");
    }
}
