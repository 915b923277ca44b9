//! Access to CPU tensor storage for the native custom ops, output buffers
//! filled in parallel, per-thread scratch, and per-task partial sums.

/// The contiguous f32 data of a CPU storage, for the native custom ops
/// (`op` names the op in the error).
pub fn f32_slice<'a>(
    storage: &'a candle_core::CpuStorage,
    layout: &candle_core::Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    use candle_core::backend::BackendStorage;
    let candle_core::CpuStorage::F32(data) = storage else {
        candle_core::bail!("native {op} takes f32, got {:?}", storage.dtype())
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("native {op} takes contiguous tensors")
    };
    Ok(&data[start..end])
}

/// A vector of `len` values produced in chunks of `chunk` on the rayon pool:
/// `fill(i, out)` writes chunk `i` (the last may be shorter). Output buffers
/// of the native ops are written whole, so zeroing them first, as
/// `vec![0.0; len]` does, would be a pass over memory of its own.
///
/// # Safety
/// `fill` must write every element of the chunk it is given.
pub(crate) unsafe fn par_filled(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [std::mem::MaybeUninit<f32>]) + Sync + Send,
) -> Vec<f32> {
    use rayon::prelude::*;
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| fill(i, c));
    // SAFETY: the caller's `fill` initialised every element of `..len`.
    unsafe { out.set_len(len) };
    out
}

/// A vector of `len` floats written whole by one call of `fill` (a product,
/// which threads itself, or a transform), without zeroing it first.
///
/// # Safety
/// `fill` must write every element of the slice it is given.
pub(crate) unsafe fn overwritten(
    len: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<f32>]),
) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: the caller's `fill` initialised every element of `..len`.
    unsafe { out.set_len(len) };
    out
}

/// Float buffers kept by one thread between calls and lent out for the
/// length of a closure: column matrices, padded images and transformed
/// kernels would otherwise be allocated (and page-faulted in) for every
/// call. A thread that re-enters while a buffer is lent (work stealing
/// inside a threaded product picks up another task that asks for one) gets
/// a second buffer, kept too, rather than a fresh zeroed one each time.
pub(crate) struct ThreadBuffer(std::cell::RefCell<Vec<Vec<f32>>>);

impl ThreadBuffer {
    pub(crate) const fn new() -> Self {
        Self(std::cell::RefCell::new(Vec::new()))
    }

    /// Runs `f` on at least `len` floats of a buffer (contents
    /// unspecified). The shelf is borrowed only to take a buffer and to put
    /// it back, never while `f` runs, so `f` may lend again.
    pub(crate) fn lend<R>(&self, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
        let mut buf = self.0.borrow_mut().pop().unwrap_or_default();
        if buf.len() < len {
            buf.resize(len, 0.0);
        }
        let out = f(&mut buf[..len]);
        self.0.borrow_mut().push(buf);
        out
    }
}

/// Runs `f` on this thread's scratch [`ThreadBuffer`] of `len` floats
/// (contents unspecified).
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static SCRATCH: ThreadBuffer = const { ThreadBuffer::new() };
    }
    SCRATCH.with(|buffer| buffer.lend(len, f))
}

/// Adds every later per-task partial result into the first, in task order
/// rather than by rayon's reduction tree (whose shape depends on work
/// stealing), so training stays bit-reproducible.
pub(crate) fn add_into_first(partials: &mut [Vec<f32>]) {
    if let Some((total, rest)) = partials.split_first_mut() {
        for partial in rest.iter() {
            for (a, b) in total.iter_mut().zip(partial) {
                *a += b;
            }
        }
    }
}

/// The elementwise sum of per-task partial results by [`add_into_first`];
/// `len` zeros when there are none.
pub(crate) fn sum_in_order(mut partials: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    add_into_first(&mut partials);
    partials
        .into_iter()
        .next()
        .unwrap_or_else(|| vec![0f32; len])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lend inside a lend (what work stealing does) gets a buffer of its
    /// own, and both are kept for the next calls.
    #[test]
    fn a_nested_lend_gets_a_second_buffer_and_both_are_kept() {
        let shelf = ThreadBuffer::new();
        let first = shelf.lend(8, |outer| {
            outer.fill(1.0);
            let inner = shelf.lend(8, |inner| {
                inner.fill(2.0);
                inner.as_ptr()
            });
            assert!(outer.iter().all(|&v| v == 1.0));
            (outer.as_ptr(), inner)
        });
        assert_ne!(first.0, first.1);
        let again = shelf.lend(8, |outer| {
            (outer.as_ptr(), shelf.lend(4, |inner| inner.as_ptr()))
        });
        assert_eq!(again, first);
    }
}
