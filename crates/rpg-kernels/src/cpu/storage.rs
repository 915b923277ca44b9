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

/// Runs `f` on this thread's scratch buffer of at least `len` floats
/// (contents unspecified), kept between calls: a column matrix or padded
/// image per image would otherwise be allocated and zeroed for every rayon
/// job. A thread that re-enters while its buffer is lent (work stealing
/// inside a threaded gemm) gets a fresh one.
pub(crate) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0f32; len]),
    })
}

/// The elementwise sum of per-task partial results, added in task order
/// rather than by rayon's reduction tree (whose shape depends on work
/// stealing), so training stays bit-reproducible; `len` zeros when there
/// are none.
pub(crate) fn sum_in_order(partials: Vec<Vec<f32>>, len: usize) -> Vec<f32> {
    partials
        .into_iter()
        .reduce(|mut a, b| {
            for (a, b) in a.iter_mut().zip(&b) {
                *a += b;
            }
            a
        })
        .unwrap_or_else(|| vec![0f32; len])
}
