//! Frame counts to nanoseconds and back for a framerate, with checked arithmetic: every
//! conversion returns `None` where the result does not fit a `u64` (or the rate is
//! unknown) instead of panicking or wrapping.
//!
//! A chunk of `k` frames at `n/d` fps is one unit of the rate `n/(d k)`
//! ([`Timebase::per`]), so the same type maps chunk indices to time.

/// Units (frames, or chunks) per second as the fraction `num / den`, both >= 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timebase {
    num: u64,
    den: u64,
}

const NS: u128 = 1_000_000_000;

impl Timebase {
    /// The rate of a `fps_n/fps_d` framerate; `None` for an unknown rate (0/x) or a zero
    /// denominator.
    pub fn from_fps(fps_n: u32, fps_d: u32) -> Option<Self> {
        Self::new(u64::from(fps_n), u64::from(fps_d))
    }

    /// `num / den` units per second; `None` when either is 0.
    pub fn new(num: u64, den: u64) -> Option<Self> {
        (num > 0 && den > 0).then_some(Self { num, den })
    }

    /// The rate of groups of `units` units (a chunk of `units` frames); `None` for 0 or when
    /// the denominator overflows.
    pub fn per(self, units: u64) -> Option<Self> {
        Self::new(self.num, self.den.checked_mul(units)?)
    }

    /// Start of unit `index`: `index * den * 10^9 / num` ns, rounded down.
    pub fn to_ns(self, index: u64) -> Option<u64> {
        let ns = u128::from(index).checked_mul(u128::from(self.den))?.checked_mul(NS)? / u128::from(self.num);
        u64::try_from(ns).ok()
    }

    /// `index` units in ns, rounded up (for latencies: never less than the real span).
    pub fn to_ns_ceil(self, index: u64) -> Option<u64> {
        let ns = (u128::from(index).checked_mul(u128::from(self.den))?.checked_mul(NS)?).div_ceil(u128::from(self.num));
        u64::try_from(ns).ok()
    }

    /// Duration of one unit, ns (rounded down).
    pub fn unit_ns(self) -> Option<u64> {
        self.to_ns(1)
    }

    /// The unit whose span holds `t` ns: the last `k` with `to_ns(k) <= t` (exact rational
    /// arithmetic, consistent with the rounded-down starts). Always fits for a `u64` `t`.
    pub fn index_at(self, t: u64) -> u64 {
        let per = u128::from(self.den) * NS;
        let k = ((u128::from(t) + 1) * u128::from(self.num)).div_ceil(per) - 1;
        u64::try_from(k).unwrap_or(u64::MAX)
    }

    /// Number of units that start before `t` ns (the units needed to play up to `t`).
    pub fn count_before(self, t: u64) -> u64 {
        let per = u128::from(self.den) * NS;
        u64::try_from((u128::from(t) * u128::from(self.num)).div_ceil(per)).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_durations() {
        let tb = |n, d| Timebase::from_fps(n, d).unwrap();
        assert_eq!(tb(25, 1).unit_ns(), Some(40_000_000));
        assert_eq!(tb(30000, 1001).unit_ns(), Some(33_366_666));
        assert_eq!(tb(30000, 1001).to_ns(3), Some(100_100_000));
        assert_eq!(tb(30000, 1001).to_ns_ceil(1), Some(33_366_667));
        assert_eq!(Timebase::from_fps(0, 1), None);
        assert_eq!(Timebase::from_fps(25, 0), None);
    }

    #[test]
    fn extreme_rates_do_not_wrap() {
        // 1/2147483647 fps: one frame lasts about 68 years; a few of them overflow u64.
        let slow = Timebase::from_fps(1, i32::MAX as u32).unwrap();
        assert_eq!(slow.unit_ns(), Some(2_147_483_647_000_000_000));
        assert_eq!(slow.to_ns(9), None);
        assert_eq!(slow.to_ns(u64::MAX), None);
        assert_eq!(slow.per(u64::MAX).and_then(|c| c.per(2)), None);
        let fast = Timebase::from_fps(i32::MAX as u32, 1).unwrap();
        assert_eq!(fast.unit_ns(), Some(0));
        assert_eq!(fast.index_at(u64::MAX), u64::MAX);
        assert_eq!(fast.count_before(u64::MAX), u64::MAX);
    }

    #[test]
    fn chunks_are_units_of_a_slower_rate() {
        // omnitokparse's Geometry tests cover index_at / count_before at chunk level.
        let chunk = Timebase::from_fps(25, 1).unwrap().per(5).unwrap();
        assert_eq!(chunk.to_ns(3), Some(600_000_000));
        assert_eq!(chunk.to_ns_ceil(1), Some(200_000_000));
        assert_eq!(Timebase::from_fps(25, 1).unwrap().per(0), None);
        let tb = Timebase::from_fps(30_000, 1001).unwrap();
        assert_eq!(tb.index_at(33_366_665), 0);
        assert_eq!(tb.index_at(33_366_666), 1);
        assert_eq!(tb.count_before(33_366_666), 1);
        assert_eq!(tb.count_before(33_366_667), 2);
    }
}
