//! Framework-free generation and gradient kernels on plain slices.
//!
//! `generate`: `w[k] = c * s_k * ring[j_k]`. `accumulate`, its adjoint:
//! `ring_grad[j_k] += c * s_k * grad[k]`. Both are multi-threaded for large
//! inputs and allocate nothing per element. `accumulate` gives each thread a
//! contiguous run of positions and a private partial ring gradient (no
//! atomics), reduced in a fixed order: deterministic for a given thread count.

use std::ops::Range;

use crate::entry::{INDEX_MASK, SIGN_BIT, signed};
use crate::fork_join::ForkJoin;
use crate::{Error, Result};

/// Below this many elements per thread, threads cost more than they save.
const MIN_ELEMENTS_PER_THREAD: usize = 1 << 16;

/// Threads the kernels may use: `RPG_NUM_THREADS`, else `RAYON_NUM_THREADS`
/// (the variable Candle honours), else the available parallelism.
pub fn thread_count() -> usize {
    ["RPG_NUM_THREADS", "RAYON_NUM_THREADS"]
        .iter()
        .find_map(|var| std::env::var(var).ok()?.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn threads_for(work: usize) -> usize {
    thread_count().min(work / MIN_ELEMENTS_PER_THREAD).max(1)
}

/// A run of positions that share a ring and a scale (one layer).
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Positions in the concatenated weights.
    pub range: Range<usize>,
    /// Ring group.
    pub group: usize,
    /// Scale `c`.
    pub scale: f32,
}

/// Generates one layer: `out[k] = scale * sign(entries[k]) * ring[index(entries[k])]`.
pub fn generate(ring: &[f32], entries: &[u32], scale: f32, out: &mut [f32]) -> Result<()> {
    check_entries(entries, ring.len(), out.len(), "generated weights")?;
    let segment = Segment {
        range: 0..entries.len(),
        group: 0,
        scale,
    };
    generate_segments(&[segment], &[ring], entries, out);
    Ok(())
}

/// Accumulates one layer's weight gradient into a ring gradient:
/// `ring_grad[index(entries[k])] += scale * sign(entries[k]) * grad[k]`.
pub fn accumulate(grad: &[f32], entries: &[u32], scale: f32, ring_grad: &mut [f32]) -> Result<()> {
    check_entries(entries, ring_grad.len(), grad.len(), "weight gradient")?;
    let segment = Segment {
        range: 0..entries.len(),
        group: 0,
        scale,
    };
    accumulate_segments(
        &[segment],
        entries,
        &[Some(grad)],
        &mut [ring_grad],
        &crate::ScopedThreads,
    );
    Ok(())
}

fn check_entries(
    entries: &[u32],
    ring_len: usize,
    data_len: usize,
    what: &'static str,
) -> Result<()> {
    if entries.len() != data_len {
        return Err(Error::LengthMismatch {
            what,
            expected: entries.len(),
            got: data_len,
        });
    }
    let max_index = entries.iter().map(|&e| e & INDEX_MASK).max().unwrap_or(0) as usize;
    if !entries.is_empty() && max_index >= ring_len {
        return Err(Error::LengthMismatch {
            what: "ring (shorter than the largest index)",
            expected: max_index + 1,
            got: ring_len,
        });
    }
    Ok(())
}

/// Fused generation over segments; callers guarantee lengths and indices.
pub(crate) fn generate_segments(
    segments: &[Segment],
    rings: &[&[f32]],
    entries: &[u32],
    out: &mut [f32],
) {
    let threads = threads_for(out.len());
    if threads == 1 {
        generate_range(segments, rings, entries, out, 0);
        return;
    }
    let chunk = out.len().div_ceil(threads);
    std::thread::scope(|scope| {
        for (t, out_chunk) in out.chunks_mut(chunk).enumerate() {
            scope.spawn(move || generate_range(segments, rings, entries, out_chunk, t * chunk));
        }
    });
}

/// Fills `out`, which holds positions `start..start + out.len()`, on the
/// calling thread.
pub(crate) fn generate_range(
    segments: &[Segment],
    rings: &[&[f32]],
    entries: &[u32],
    out: &mut [f32],
    start: usize,
) {
    let end = start + out.len();
    for segment in segments {
        let lo = segment.range.start.max(start);
        let hi = segment.range.end.min(end);
        if lo >= hi {
            continue;
        }
        // SAFETY: callers guarantee every index is below its ring's length
        // (`Placement` builds them so and checks ring lengths; the public
        // slice functions check the largest index first).
        unsafe {
            gather(
                rings[segment.group],
                &entries[lo..hi],
                segment.scale,
                &mut out[lo - start..hi - start],
            )
        };
    }
}

/// `out[k] = scale * sign(e_k) * ring[index(e_k)]`, dispatched to an AVX2
/// build of the same loop (hardware gathers) when the CPU has it.
///
/// # Safety
/// Every `index(e_k)` must be below `ring.len()`, and `out.len() == entries.len()`.
unsafe fn gather(ring: &[f32], entries: &[u32], scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2; the caller upholds the index contract.
        return unsafe { gather_avx2(ring, entries, scale, out) };
    }
    // SAFETY: forwarded contract.
    unsafe { gather_portable(ring, entries, scale, out) }
}

/// [`gather_portable`] eight at a time with hardware gathers, the weights
/// written with streaming stores: a layer's weights are read next by the
/// forward pass, after the whole model's (tens of MB) have gone through
/// the cache, so reading each line in before overwriting it was a third
/// of generation's memory traffic for nothing. Same values as the
/// portable loop (the same product per weight).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn gather_avx2(ring: &[f32], entries: &[u32], scale: f32, out: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = out.len();
    // Streaming stores need 32-byte aligned addresses: the head up to one
    // is written plainly, as is the tail.
    let head = out.as_ptr().align_offset(32).min(n);
    let body_end = head + (n - head) / 8 * 8;
    // SAFETY: forwarded contract, on the head's part.
    unsafe { gather_portable(ring, &entries[..head], scale, &mut out[..head]) };
    let index_mask = _mm256_set1_epi32(INDEX_MASK as i32);
    let sign_mask = _mm256_set1_epi32(SIGN_BIT as i32);
    let scale_v = _mm256_set1_ps(scale);
    let mut k = head;
    while k < body_end {
        // SAFETY: `k + 8 <= n`, `entries.len() == n`; every index is in
        // `ring` (the caller's contract) and below 2^31 (masked), so the
        // signed 32-bit gather offsets are those indices; `out + k` is
        // 32-byte aligned.
        unsafe {
            let e = _mm256_loadu_si256(entries.as_ptr().add(k).cast());
            let values = _mm256_i32gather_ps::<4>(ring.as_ptr(), _mm256_and_si256(e, index_mask));
            let signs = _mm256_castsi256_ps(_mm256_and_si256(e, sign_mask));
            let w = _mm256_mul_ps(scale_v, _mm256_xor_ps(values, signs));
            _mm256_stream_ps(out.as_mut_ptr().add(k), w);
        }
        k += 8;
    }
    // Streaming stores are weakly ordered: fence them before the weights
    // are handed on.
    _mm_sfence();
    // SAFETY: forwarded contract, on the tail's part.
    unsafe { gather_portable(ring, &entries[body_end..], scale, &mut out[body_end..]) };
}

#[inline(always)]
unsafe fn gather_portable(ring: &[f32], entries: &[u32], scale: f32, out: &mut [f32]) {
    for (w, &e) in out.iter_mut().zip(entries) {
        // SAFETY: the caller guarantees the index is in bounds.
        let value = unsafe { *ring.get_unchecked((e & INDEX_MASK) as usize) };
        *w = scale * signed(value, e);
    }
}

/// How many positions ahead the scatter-add asks for the ring-gradient
/// entry it will need. A ResNet-18 ring is 4.4 MB, so each add is a trip
/// to L3, and its store holds up the store queue until the line arrives:
/// `cargo xtask bench-core`'s ResNet-18 accumulate took 83-146 ms without,
/// 52-71 with (2 threads, builds alternated, 2026-12-01). Generation's
/// random loads do not wait on stores and gained nothing.
const PREFETCH_AHEAD: usize = 32;

/// Asks the CPU to bring `ring[index(entry)]` into L1; no effect on values,
/// and nothing on targets without a prefetch instruction.
#[inline(always)]
fn prefetch(ring: &[f32], entry: u32) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let at = ring.as_ptr().wrapping_add((entry & INDEX_MASK) as usize);
        // SAFETY: a prefetch reads nothing architecturally and never
        // faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ring, entry);
}

/// The scatter-add's entries and gradients (4-byte elements) per cache
/// line.
const STREAM_LINE: usize = 16;
/// How far ahead (elements, 2 KiB) the scatter-add fetches its streamed
/// entries and gradients.
const STREAM_AHEAD: usize = 512;

/// Fetches the line of `data[at]` as non-temporal: into the near cache
/// without being kept in the outer ones. The scatter-add streams 8 bytes a
/// position (tens of MB) past ring gradients it updates at random (a few
/// MB each, which fit in L3); fetched plainly, the stream evicted them.
/// ResNet-18-cifar's ring gradient: 9.0-10.8 -> 4.9-6.2 ms a step
/// (AVX-512 EPYC, 2026-12-03).
#[inline(always)]
fn prefetch_streamed<T>(data: &[T], at: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_NTA, _mm_prefetch};
        let p = data.as_ptr().wrapping_add(at);
        // SAFETY: a prefetch never faults, whatever the address.
        unsafe { _mm_prefetch::<_MM_HINT_NTA>(p.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (data, at);
}

/// Fused scatter-add over segments; callers guarantee lengths and indices.
/// `grads[i]` is segment `i`'s weight gradient (its own slice, as long as the
/// segment), `None` where it has none.
///
/// With `P` threads, the positions are cut into `P` contiguous chunks, run
/// as tasks on `pool`; task 0 adds into the ring gradient directly and task
/// `t > 0` into a zeroed scratch copy, which are then added in task order.
/// The result is deterministic for a given thread count
/// (`RPG_NUM_THREADS`), and equal to a serial loop when `P = 1`.
pub(crate) fn accumulate_segments(
    segments: &[Segment],
    entries: &[u32],
    grads: &[Option<&[f32]>],
    ring_grads: &mut [&mut [f32]],
    pool: &dyn ForkJoin,
) {
    let positions = entries.len();
    let ring_total: usize = ring_grads.iter().map(|g| g.len()).sum();
    // Scratch costs a zeroing and a reduction pass over the rings: only worth
    // it when positions outnumber ring entries.
    let threads = threads_for(positions)
        .min(positions / ring_total.max(1))
        .max(1);
    if threads == 1 {
        accumulate_range(segments, entries, grads, ring_grads, 0..positions);
        return;
    }
    let chunk = positions.div_ceil(threads);
    let mut scratch: Vec<Vec<Vec<f32>>> = (1..threads)
        .map(|_| ring_grads.iter().map(|g| vec![0.0f32; g.len()]).collect())
        .collect();
    {
        let ring_grads = &mut *ring_grads;
        let first: Box<dyn FnOnce() + Send + '_> = Box::new(move || {
            accumulate_range(
                segments,
                entries,
                grads,
                ring_grads,
                0..chunk.min(positions),
            );
        });
        let rest = scratch.iter_mut().enumerate().map(|(t, buffers)| {
            let range = (t + 1) * chunk..((t + 2) * chunk).min(positions);
            Box::new(move || {
                let mut views: Vec<&mut [f32]> = buffers.iter_mut().map(|b| &mut b[..]).collect();
                accumulate_range(segments, entries, grads, &mut views, range);
            }) as Box<dyn FnOnce() + Send + '_>
        });
        pool.run_all(std::iter::once(first).chain(rest).collect());
    }
    for buffers in &scratch {
        for (ring_grad, buffer) in ring_grads.iter_mut().zip(buffers) {
            for (r, b) in ring_grad.iter_mut().zip(buffer) {
                *r += b;
            }
        }
    }
}

/// Serial scatter-add of positions `range` into `ring_grads`.
fn accumulate_range(
    segments: &[Segment],
    entries: &[u32],
    grads: &[Option<&[f32]>],
    ring_grads: &mut [&mut [f32]],
    range: Range<usize>,
) {
    for (segment, grad) in segments.iter().zip(grads) {
        let lo = segment.range.start.max(range.start);
        let hi = segment.range.end.min(range.end);
        let Some(grad) = grad else { continue };
        if lo >= hi {
            continue;
        }
        let ring_grad = &mut *ring_grads[segment.group];
        let scale = segment.scale;
        let start = segment.range.start;
        let entries = &entries[lo..hi];
        let grad = &grad[lo - start..hi - start];
        for (k, (&e, &g)) in entries.iter().zip(grad).enumerate() {
            if k % STREAM_LINE == 0 {
                prefetch_streamed(entries, k + STREAM_AHEAD);
                prefetch_streamed(grad, k + STREAM_AHEAD);
            }
            if let Some(&ahead) = entries.get(k + PREFETCH_AHEAD) {
                prefetch(ring_grad, ahead);
            }
            ring_grad[(e & INDEX_MASK) as usize] += scale * signed(g, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector gather (streaming stores past an aligned head) gives the
    /// portable loop's values at every alignment and length.
    #[test]
    fn the_gather_matches_the_portable_loop_at_every_alignment() {
        let ring: Vec<f32> = (0..1000).map(|j| (j as f32 * 0.37).sin()).collect();
        let entries: Vec<u32> = (0..200u32)
            .map(|k| (k * 7919 % 1000) | if k % 3 == 0 { SIGN_BIT } else { 0 })
            .collect();
        for offset in 0..9 {
            for len in [0, 1, 7, 8, 9, 31, 64, 100, 191] {
                let entries = &entries[..len];
                let mut fast = vec![0f32; len + offset];
                let mut plain = vec![0f32; len];
                // SAFETY: every index is below 1000.
                unsafe {
                    gather(&ring, entries, 0.5, &mut fast[offset..]);
                    gather_portable(&ring, entries, 0.5, &mut plain);
                }
                assert_eq!(&fast[offset..], &plain[..], "offset {offset}, length {len}");
            }
        }
    }

    #[test]
    fn generate_applies_sign_and_scale() {
        let ring = [1.0, 2.0, 3.0];
        let entries = [2, SIGN_BIT, 1 | SIGN_BIT, 2];
        let mut out = [0.0; 4];
        generate(&ring, &entries, 0.5, &mut out).unwrap();
        assert_eq!(out, [1.5, -0.5, -1.0, 1.5]);
    }

    #[test]
    fn accumulate_sums_duplicates() {
        let entries = [2, SIGN_BIT, 1 | SIGN_BIT, 2];
        let grad = [1.0, 1.0, 1.0, 1.0];
        let mut ring_grad = [0.0; 3];
        accumulate(&grad, &entries, 2.0, &mut ring_grad).unwrap();
        assert_eq!(ring_grad, [-2.0, -2.0, 4.0]);
    }

    #[test]
    fn bad_lengths_and_indices_are_errors() {
        let mut out = [0.0; 2];
        assert!(generate(&[1.0], &[0, 1], 1.0, &mut out).is_err());
        assert!(generate(&[1.0, 2.0], &[0], 1.0, &mut out).is_err());
        let mut ring_grad = [0.0; 1];
        assert!(accumulate(&[1.0, 1.0], &[0, 3], 1.0, &mut ring_grad).is_err());
    }

    #[test]
    fn threaded_paths_match_serial() {
        // Large enough to take the multi-threaded branch when cores allow.
        let n = 1000;
        let len = 4 * MIN_ELEMENTS_PER_THREAD + 17;
        let mut state = 12345u32;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state
        };
        let entries: Vec<u32> = (0..len)
            .map(|_| (next() % n) | (next() & SIGN_BIT))
            .collect();
        let ring: Vec<f32> = (0..n).map(|i| (i as f32).sin()).collect();
        let grad: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).cos()).collect();
        let mut fused = vec![0.0; len];
        generate(&ring, &entries, 1.5, &mut fused).unwrap();
        let mut fused_grad = vec![0.0; n as usize];
        accumulate(&grad, &entries, 1.5, &mut fused_grad).unwrap();
        let mut serial_grad = vec![0.0f32; n as usize];
        for k in 0..len {
            let e = entries[k];
            assert_eq!(fused[k], 1.5 * signed(ring[(e & INDEX_MASK) as usize], e));
            serial_grad[(e & INDEX_MASK) as usize] += 1.5 * signed(grad[k], e);
        }
        for (a, b) in fused_grad.iter().zip(&serial_grad) {
            assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}
