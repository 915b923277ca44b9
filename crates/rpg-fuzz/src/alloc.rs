//! A global allocator that refuses any single allocation above a cap: a
//! reader that sizes a buffer from a header it has not checked shows up as
//! a failed run (`memory allocation of N bytes failed`), not as a machine
//! that runs out of memory some other day.

use std::alloc::{GlobalAlloc, Layout, System};

/// The largest single allocation a reader may make while fuzzed.
pub const CAP: usize = 1 << 30;

/// [`System`], refusing allocations above [`CAP`].
#[derive(Debug)]
pub struct Capped;

// SAFETY: every call is forwarded to `System` unchanged, except that
// over-large requests return null, which `GlobalAlloc` allows.
unsafe impl GlobalAlloc for Capped {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > CAP {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}
