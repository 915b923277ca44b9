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
/// 16-byte boundary touches two cache lines. Which buffers were misaligned
/// depended on the process's earlier allocations: ResNet-18-cifar's RPG
/// forward/backward ran 4% slower than the dense one on the same
/// arithmetic, most of it in Winograd's transforms (`perf`: input
/// transform +26% samples). Aligned, both ran 219 / 217 ms (dense / RPG
/// median of six processes, against 228 / 238 before; AVX-512 EPYC,
/// 2026-12-03). PyTorch's CPU allocator aligns to 64 bytes too. The
/// arithmetic is the same wherever a buffer lies, so results are unchanged.
pub struct CacheLineAligned;

/// The alignment of large blocks.
const CACHE_LINE: usize = 64;
/// Blocks from this size up are aligned; small ones (strings, shapes, graph
/// nodes) keep glibc's 16 bytes and its cheaper path.
const LARGE_BLOCK: usize = 4096;

/// The layout passed to the system allocator for `layout`.
fn widened(layout: Layout) -> Layout {
    if layout.size() >= LARGE_BLOCK && layout.align() < CACHE_LINE {
        Layout::from_size_align(layout.size(), CACHE_LINE).unwrap_or(layout)
    } else {
        layout
    }
}

// SAFETY: every block comes from `System` with a layout at least as aligned
// and as large as asked, and is returned to it with the layout it was
// allocated with (`widened` of the caller's layout, a pure function of it).
unsafe impl GlobalAlloc for CacheLineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `widened` keeps the size (non-zero, as the caller's).
        unsafe { System.alloc(widened(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe { System.alloc_zeroed(widened(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `widened(layout)`.
        unsafe { System.dealloc(ptr, widened(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = widened(layout);
        let Ok(new) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let new = widened(new);
        if new.align() == old.align() {
            // SAFETY: `ptr` was allocated by `System` with `old`; the block
            // it returns has `old`'s alignment, which is `new`'s.
            return unsafe { System.realloc(ptr, old, new_size) };
        }
        // Crossing `LARGE_BLOCK`: the alignment changes, so move the block.
        // SAFETY: `new` has a non-zero size; both blocks are valid for
        // the smaller of the two sizes and do not overlap.
        unsafe {
            let moved = System.alloc(new);
            if !moved.is_null() {
                std::ptr::copy_nonoverlapping(ptr, moved, old.size().min(new_size));
                System.dealloc(ptr, old);
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
        let zeroed = vec![0u64; 4096];
        assert_eq!(zeroed.as_ptr() as usize % super::CACHE_LINE, 0);
        assert!(zeroed.iter().all(|&x| x == 0));
    }
}
