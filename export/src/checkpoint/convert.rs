//! Decoding stored elements into [`TensorData`]: floats widen to f32 (exactly for
//! f16/bf16; f64 rounds to nearest), integers and bools widen to i64.

use anyhow::{Result, anyhow, bail};

use super::{DType, TensorData};

impl DType {
    /// Bytes per stored element.
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::U8 | DType::Bool => 1,
        }
    }

    /// Whether the elements decode to [`TensorData::F32`] (else [`TensorData::I64`]).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F16 | DType::BF16 | DType::F64)
    }
}

/// Accumulates decoded elements of one tensor.
pub(crate) struct Decoder {
    dtype: DType,
    big_endian: bool,
    data: TensorData,
}

impl Decoder {
    /// A decoder with room for `numel` elements; fails (instead of aborting) when
    /// the allocation is impossible.
    pub(crate) fn new(dtype: DType, big_endian: bool, numel: usize) -> Result<Self> {
        let oom = |_| anyhow!("cannot allocate {numel} elements");
        let data = if dtype.is_float() {
            let mut v = Vec::new();
            v.try_reserve_exact(numel).map_err(oom)?;
            TensorData::F32(v)
        } else {
            let mut v = Vec::new();
            v.try_reserve_exact(numel).map_err(oom)?;
            TensorData::I64(v)
        };
        Ok(Decoder {
            dtype,
            big_endian,
            data,
        })
    }

    /// Decodes whole elements from `bytes` (a trailing partial element is ignored;
    /// callers hand over whole elements).
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        macro_rules! conv {
            ($v:expr, $n:literal, |$a:ident| $e:expr) => {{
                let it = bytes.chunks_exact($n).map(|c| {
                    let mut $a = [0u8; $n];
                    $a.copy_from_slice(c);
                    if self.big_endian {
                        $a.reverse();
                    }
                    $e
                });
                $v.extend(it)
            }};
        }
        match (&mut self.data, self.dtype) {
            (TensorData::F32(v), DType::F32) => conv!(v, 4, |a| f32::from_le_bytes(a)),
            (TensorData::F32(v), DType::F16) => {
                conv!(v, 2, |a| half::f16::from_le_bytes(a).to_f32())
            }
            (TensorData::F32(v), DType::BF16) => {
                conv!(v, 2, |a| half::bf16::from_le_bytes(a).to_f32())
            }
            (TensorData::F32(v), DType::F64) => conv!(v, 8, |a| f64::from_le_bytes(a) as f32),
            (TensorData::I64(v), DType::I64) => conv!(v, 8, |a| i64::from_le_bytes(a)),
            (TensorData::I64(v), DType::I32) => conv!(v, 4, |a| i64::from(i32::from_le_bytes(a))),
            (TensorData::I64(v), DType::U8) => v.extend(bytes.iter().map(|&b| i64::from(b))),
            (TensorData::I64(v), DType::Bool) => v.extend(bytes.iter().map(|&b| i64::from(b != 0))),
            // `new` pairs float dtypes with F32 data and the rest with I64.
            _ => {}
        }
    }

    pub(crate) fn finish(self) -> TensorData {
        self.data
    }
}

/// Copies a strided view out of `span`, which holds the storage elements starting
/// at element `span_start`. The caller has bounds-checked the view; a view that
/// leaves the span anyway is an error, never a panic.
pub(crate) fn gather(
    dtype: DType,
    big_endian: bool,
    span: &[u8],
    span_start: usize,
    offset: usize,
    size: &[usize],
    stride: &[usize],
) -> Result<TensorData> {
    if size.len() != stride.len() {
        bail!("size and stride differ in length");
    }
    let es = dtype.size_bytes();
    let numel = size
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| anyhow!("element count overflows"))?;
    let mut dec = Decoder::new(dtype, big_endian, numel)?;
    if numel == 0 {
        return Ok(dec.finish());
    }
    let slice = |first: usize, count: usize| -> Result<&[u8]> {
        first
            .checked_sub(span_start)
            .and_then(|rel| {
                let a = rel.checked_mul(es)?;
                let b = a.checked_add(count.checked_mul(es)?)?;
                span.get(a..b)
            })
            .ok_or_else(|| anyhow!("view leaves its storage"))
    };
    let nd = size.len();
    let (inner_len, inner_stride) = match nd {
        0 => (1, 1),
        _ => (size[nd - 1], stride[nd - 1]),
    };
    let outer = nd.saturating_sub(1);
    let mut idx = vec![0usize; outer];
    loop {
        let mut start = offset;
        for d in 0..outer {
            start = start.saturating_add(idx[d].saturating_mul(stride[d]));
        }
        if inner_stride == 1 || inner_len == 1 {
            dec.push(slice(start, inner_len)?);
        } else {
            for j in 0..inner_len {
                dec.push(slice(start.saturating_add(j.saturating_mul(inner_stride)), 1)?);
            }
        }
        // Advance the odometer over the outer dims.
        let mut d = outer;
        loop {
            if d == 0 {
                return Ok(dec.finish());
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// The largest storage element index a view touches, with overflow checks.
/// `None` for an empty view.
pub(crate) fn max_index(offset: usize, size: &[usize], stride: &[usize]) -> Result<Option<usize>> {
    if size.contains(&0) {
        return Ok(None);
    }
    let mut m = offset;
    for (&n, &s) in size.iter().zip(stride) {
        m = (n - 1)
            .checked_mul(s)
            .and_then(|x| m.checked_add(x))
            .ok_or_else(|| anyhow!("view extent overflows"))?;
    }
    Ok(Some(m))
}

/// Whether a view with these sizes and strides is row-major contiguous.
pub(crate) fn is_contiguous(size: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&n, &s) in size.iter().zip(stride).rev() {
        if n != 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(n);
    }
    true
}

/// Product of a shape, with overflow check.
pub(crate) fn numel(size: &[usize]) -> Result<usize> {
    size.iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| anyhow!("element count of shape {size:?} overflows"))
}

/// Converts pickle/header integers to usize.
pub(crate) fn to_usize(v: &[u64]) -> Result<Vec<usize>> {
    v.iter()
        .map(|&x| usize::try_from(x).map_err(|_| anyhow!("{x} does not fit in memory")))
        .collect()
}

pub(crate) fn check_len(bytes: u64, dtype: DType) -> Result<u64> {
    let es = dtype.size_bytes() as u64;
    if !bytes.is_multiple_of(es) {
        bail!("{bytes} bytes is not a whole number of {dtype:?} elements");
    }
    Ok(bytes / es)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(d: TensorData) -> Vec<u32> {
        match d {
            TensorData::F32(v) => v.into_iter().map(f32::to_bits).collect(),
            TensorData::I64(_) => panic!("expected f32"),
        }
    }

    #[test]
    fn widening_is_exact() {
        let mut d = Decoder::new(DType::F16, false, 0).unwrap();
        // 1.0, smallest subnormal, max, -inf, -0.0
        for h in [0x3c00u16, 0x0001, 0x7bff, 0xfc00, 0x8000] {
            d.push(&h.to_le_bytes());
        }
        assert_eq!(
            f32s(d.finish()),
            [
                1.0f32.to_bits(),
                2f32.powi(-24).to_bits(),
                65504f32.to_bits(),
                f32::NEG_INFINITY.to_bits(),
                (-0.0f32).to_bits()
            ]
        );
        let mut d = Decoder::new(DType::BF16, false, 0).unwrap();
        for h in [0x3f80u16, 0x0001, 0x7f7f, 0xff80] {
            d.push(&h.to_le_bytes());
        }
        assert_eq!(f32s(d.finish()), [0x3f80_0000, 0x0001_0000, 0x7f7f_0000, 0xff80_0000]);
        let mut d = Decoder::new(DType::I32, true, 0).unwrap();
        d.push(&(-5i32).to_be_bytes());
        assert_eq!(d.finish(), TensorData::I64(vec![-5]));
        let mut d = Decoder::new(DType::Bool, false, 0).unwrap();
        d.push(&[0, 1, 2]);
        assert_eq!(d.finish(), TensorData::I64(vec![0, 1, 1]));
    }

    #[test]
    fn gather_honours_offset_and_stride() {
        // storage: 0..12 as f32; view: offset 1, size (3, 2), stride (1, 3) (a transpose)
        let bytes: Vec<u8> = (0..12).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let d = gather(DType::F32, false, &bytes, 0, 1, &[3, 2], &[1, 3]).unwrap();
        assert_eq!(d, TensorData::F32(vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
        // Same view from a span that starts at element 1.
        let d = gather(DType::F32, false, &bytes[4..], 1, 1, &[3, 2], &[1, 3]).unwrap();
        assert_eq!(d, TensorData::F32(vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]));
        // Scalar, empty, broadcast (stride 0).
        assert_eq!(
            gather(DType::F32, false, &bytes, 0, 5, &[], &[]).unwrap(),
            TensorData::F32(vec![5.0])
        );
        assert_eq!(
            gather(DType::F32, false, &bytes, 0, 0, &[0, 4], &[4, 1]).unwrap(),
            TensorData::F32(vec![])
        );
        assert_eq!(
            gather(DType::F32, false, &bytes, 0, 2, &[3], &[0]).unwrap(),
            TensorData::F32(vec![2.0; 3])
        );
        // Out of the span: error, not panic.
        assert!(gather(DType::F32, false, &bytes, 0, 10, &[4], &[1]).is_err());
        assert!(gather(DType::F32, false, &bytes[4..], 1, 0, &[4], &[1]).is_err());
    }

    #[test]
    fn view_helpers() {
        assert_eq!(max_index(3, &[2, 3], &[3, 1]).unwrap(), Some(8));
        assert_eq!(max_index(3, &[2, 0], &[3, 1]).unwrap(), None);
        assert!(max_index(0, &[usize::MAX, 2], &[2, 1]).is_err());
        assert!(is_contiguous(&[2, 3], &[3, 1]));
        assert!(is_contiguous(&[1, 3], &[99, 1]));
        assert!(!is_contiguous(&[3, 2], &[1, 3]));
        assert!(is_contiguous(&[], &[]));
    }
}
