//! What every fuzz target shares: [`run`], which treats a single allocation beyond what
//! the input's size justifies as a crash. Without a sanitizer libFuzzer cannot see
//! allocations (its `-malloc_limit_mb` needs one), so the targets install [`Guard`] as
//! their global allocator:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: omnitok_fuzz::Guard = omnitok_fuzz::Guard;
//! fuzz_target!(|data: &[u8]| omnitok_fuzz::run(data, |d| { reader(d); }));
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What any input may allocate at once regardless of its size: the readers' fixed
/// allowances (a broadcast tensor view may expand to 2^24 elements, 128 MiB as i64).
pub const BASE_LIMIT: usize = 160 << 20;
/// And per byte of input (decoded tensors, unpickled values).
pub const LIMIT_PER_INPUT_BYTE: usize = 64;

static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Runs `f` on `data` with single allocations limited to
/// `BASE_LIMIT + LIMIT_PER_INPUT_BYTE * data.len()` bytes.
pub fn run(data: &[u8], f: impl FnOnce(&[u8])) {
    let limit = BASE_LIMIT.saturating_add(LIMIT_PER_INPUT_BYTE.saturating_mul(data.len()));
    LIMIT.store(limit, Ordering::Relaxed);
    f(data);
    LIMIT.store(usize::MAX, Ordering::Relaxed);
}

/// The system allocator, aborting (a crash to libFuzzer) on an allocation over the limit.
pub struct Guard;

fn check(size: usize) {
    let limit = LIMIT.load(Ordering::Relaxed);
    if size > limit {
        LIMIT.store(usize::MAX, Ordering::Relaxed); // let the report allocate
        let _ = writeln!(
            std::io::stderr(),
            "==omnitok-fuzz== an allocation of {size} bytes, over the {limit}-byte limit for this input"
        );
        std::process::abort();
    }
}

unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        check(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        check(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}
