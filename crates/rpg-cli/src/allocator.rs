//! The process's memory: freed memory kept for reuse, large blocks
//! aligned to a cache line.
//!
//! A Candle CPU training step allocates and frees hundreds of
//! activation-sized buffers. glibc's defaults serve every buffer over 128 KiB
//! (or its adaptive threshold) with a fresh `mmap` and return memory to the
//! kernel on free, so each step pays for page faults and page zeroing all over
//! again: profiled at over a fifth of a ResNet-20 step. Raising the mmap and
//! trim thresholds lets freed buffers be reused instead.
//!
//! The mmap threshold cannot go above 32 MiB, and larger activations
//! (MobileNetV2 at 224x224 has 38.5 MB ones at batch 8) still paid a page
//! fault per page and a TLB shootdown on every free, so mmap is switched off
//! altogether: every buffer comes from the heap, kept under the same trim
//! threshold. MobileNetV2 b8 training: 17.7-19.5 -> 23.8-25.9 images/s,
//! peak RSS unchanged (847-851 MiB); ResNet-18-cifar unchanged.

use std::alloc::{GlobalAlloc, Layout, System};

/// Tunes the allocator once at start-up; a no-op off glibc.
pub fn retain_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // 32 MiB is glibc's largest mmap threshold on 64-bit targets; with
        // M_MMAP_MAX = 0 no buffer is mmapped at all, the threshold then
        // only matters if that call is refused. Trimming only above 1 GiB of
        // free heap top.
        const MMAP_THRESHOLD: libc::c_int = 32 << 20;
        const TRIM_THRESHOLD: libc::c_int = 1 << 30;
        // SAFETY: mallopt only sets allocator parameters; called before any
        // other thread exists. A refusal (return 0) leaves the defaults.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
            libc::mallopt(libc::M_MMAP_MAX, 0);
            libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
        }
    }
}

/// The global allocator: glibc's malloc, with every block of a page or more
/// starting on a 64-byte cache line.
///
/// glibc aligns to 16 bytes, so an activation's rows began wherever the
/// heap's history put them, and a 64-byte AVX-512 load or store from a
/// 16-byte boundary touches two cache lines. Aligned, ResNet-18-cifar's
/// forward/backward took 217-220 ms against 228 (dense, medians of five or
/// six processes each, AVX-512 EPYC, 2026-12-03). PyTorch's CPU allocator
/// aligns to 64 bytes too.
///
/// A large block is a plain malloc block one line longer, the returned
/// address the first line boundary at least 16 bytes in, and the distance
/// back to the malloc block stored just before it. (glibc's `memalign`
/// splits a small chunk off the front of each block, and those chunks kept
/// freed neighbours from merging: peak memory rose from 450 to 650 MB on
/// ResNet-18-cifar.) The arithmetic is the same wherever a buffer lies, so
/// results are unchanged.
pub struct CacheLineAligned;

/// The alignment of large blocks.
const CACHE_LINE: usize = 64;
/// Blocks from this size up are aligned; small ones (strings, shapes, graph
/// nodes) keep glibc's 16 bytes and its cheaper path.
const LARGE_BLOCK: usize = 4096;
/// glibc's own alignment, which the malloc block under a large one has.
const MALLOC_ALIGN: usize = 16;

/// Whether `layout` gets a line-aligned block carved out of a longer one.
fn is_large(layout: Layout) -> bool {
    layout.size() >= LARGE_BLOCK && layout.align() <= MALLOC_ALIGN
}

/// The malloc block under a large block of `size` bytes; `None` where that
/// would exceed the largest allocation (the request fails).
fn malloc_layout(size: usize) -> Option<Layout> {
    Layout::from_size_align(size.checked_add(CACHE_LINE)?, MALLOC_ALIGN).ok()
}

/// The line-aligned address in the malloc block at `base` (16 to 64 bytes
/// in), with its distance from `base` written in the 8 bytes before it.
///
/// # Safety
/// `base` is a live malloc block of at least `CACHE_LINE` bytes more than
/// the caller will use from the returned address.
unsafe fn carve(base: *mut u8) -> *mut u8 {
    if base.is_null() {
        return base;
    }
    let offset = (base as usize + size_of::<usize>()).next_multiple_of(CACHE_LINE) - base as usize;
    // SAFETY: 16 <= offset <= 64, inside the block; the 8 bytes before the
    // returned address are in the block too, and 8-byte aligned.
    unsafe {
        let aligned = base.add(offset);
        aligned.cast::<usize>().sub(1).write(offset);
        aligned
    }
}

/// The malloc block a large block at `ptr` was carved from.
///
/// # Safety
/// `ptr` was returned by [`carve`] and is still live.
unsafe fn base_of(ptr: *mut u8) -> *mut u8 {
    // SAFETY: `carve` wrote the offset just before `ptr`.
    unsafe { ptr.sub(ptr.cast::<usize>().sub(1).read()) }
}

// SAFETY: small blocks are `System`'s own. A large block is carved from a
// `System` block `CACHE_LINE` bytes longer, so the bytes asked for lie
// inside it; it is returned to `System` by the stored offset with the
// layout it was allocated with (`malloc_layout` of the caller's size,
// which the caller passes back unchanged).
unsafe impl GlobalAlloc for CacheLineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !is_large(layout) {
            // SAFETY: the caller's contract, forwarded.
            return unsafe { System.alloc(layout) };
        }
        let Some(block) = malloc_layout(layout.size()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: the block is `CACHE_LINE` bytes longer than asked.
        unsafe { carve(System.alloc(block)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !is_large(layout) {
            // SAFETY: the caller's contract, forwarded.
            return unsafe { System.alloc_zeroed(layout) };
        }
        let Some(block) = malloc_layout(layout.size()) else {
            return std::ptr::null_mut();
        };
        // SAFETY: as `alloc`; the whole block is zeroed, the offset is
        // written into its padding.
        unsafe { carve(System.alloc_zeroed(block)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !is_large(layout) {
            // SAFETY: the caller's contract, forwarded.
            return unsafe { System.dealloc(ptr, layout) };
        }
        // The layout exists: `alloc` made the block with it.
        if let Some(block) = malloc_layout(layout.size()) {
            // SAFETY: `ptr` was carved from a block of this layout.
            unsafe { System.dealloc(base_of(ptr), block) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        if !is_large(layout) && !is_large(new) {
            // SAFETY: the caller's contract, forwarded.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // A large block moves: its offset in a resized malloc block would
        // change. (Large blocks rarely grow: tensors are allocated whole.)
        // SAFETY: `new` is non-zero sized (as `layout`'s or larger than a
        // page); both blocks are valid for the smaller size and distinct.
        unsafe {
            let moved = self.alloc(new);
            if !moved.is_null() {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            moved
        }
    }
}

#[cfg(test)]
mod tests {
    /// The binary's global allocator is this one (main.rs), in its tests too.
    #[test]
    fn large_blocks_start_on_a_cache_line_and_keep_their_contents() {
        for len in [1024usize, 1025, 4096, 100_000] {
            let v: Vec<f32> = (0..len).map(|i| i as f32).collect();
            assert_eq!(v.as_ptr() as usize % super::CACHE_LINE, 0, "{len} floats");
        }
        // Growing across the threshold moves the block and keeps the values;
        // shrinking back keeps them too.
        let mut v: Vec<u8> = (0..100u8).collect();
        v.reserve_exact(10_000);
        assert_eq!(v.as_ptr() as usize % super::CACHE_LINE, 0);
        assert!(v.iter().copied().eq(0..100u8));
        v.shrink_to_fit();
        assert!(v.iter().copied().eq(0..100u8));
        // Large to larger: moved, contents kept.
        let mut big: Vec<u32> = (0..5000).collect();
        big.reserve_exact(50_000);
        assert_eq!(big.as_ptr() as usize % super::CACHE_LINE, 0);
        assert!(big.iter().copied().eq(0..5000));
        let zeroed = vec![0u64; 4096];
        assert_eq!(zeroed.as_ptr() as usize % super::CACHE_LINE, 0);
        assert!(zeroed.iter().all(|&x| x == 0));
    }
}
