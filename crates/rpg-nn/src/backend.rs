//! Which implementation the CPU f32 hot ops use: this crate's kernels
//! (convolution, batch-norm training) or Candle's stock ones. Process-wide,
//! so that benchmarks can measure both paths in one run.

use std::sync::atomic::{AtomicBool, Ordering};

/// The implementation behind [`crate::ops::conv2d`] and [`crate::BatchNorm`]
/// for f32 tensors on the CPU (other devices always use Candle's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelBackend {
    /// This crate's kernels (the default).
    Native,
    /// Candle's stock conv and candle-nn's batch norm.
    Candle,
}

static USE_CANDLE: AtomicBool = AtomicBool::new(false);

/// Sets the process-wide CPU kernel backend.
pub fn set_kernel_backend(backend: KernelBackend) {
    USE_CANDLE.store(backend == KernelBackend::Candle, Ordering::Relaxed);
}

/// The process-wide CPU kernel backend.
pub fn kernel_backend() -> KernelBackend {
    if USE_CANDLE.load(Ordering::Relaxed) {
        KernelBackend::Candle
    } else {
        KernelBackend::Native
    }
}

/// Whether the native kernels serve a tensor of this device and dtype.
pub(crate) fn native_applies(t: &candle_core::Tensor) -> bool {
    matches!(t.device(), candle_core::Device::Cpu)
        && t.dtype() == candle_core::DType::F32
        && kernel_backend() == KernelBackend::Native
}

/// The contiguous f32 data of a CPU storage, for the native custom ops
/// (`op` names the op in the error).
pub(crate) fn f32_slice<'a>(
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
