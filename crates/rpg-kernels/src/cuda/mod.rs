//! CUDA kernels of the hot ops: what `cpu/` is for the CPU. Nothing here
//! runs without an NVIDIA GPU; `rpg selftest` checks every op against the
//! CPU on one.

pub(crate) mod activation;
pub(crate) mod batch_norm;
#[cfg(feature = "cudnn")]
pub(crate) mod cudnn_conv;

use std::sync::OnceLock;

use candle_core::cuda::CudaDevice;
use candle_core::cuda::cudarc::driver::{CudaSlice, CudaView};
use candle_core::{CudaStorage, Layout, Result};

/// The f32 elements of a contiguous operand of `op`.
pub(crate) fn view<'a>(
    storage: &'a CudaStorage,
    layout: &Layout,
    op: &str,
    what: &str,
) -> Result<CudaView<'a, f32>> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("{op} (CUDA): the {what} must be contiguous")
    };
    Ok(storage.as_cuda_slice::<f32>()?.slice(start..end))
}

/// `value` as the 32-bit int CUDA kernels and cuDNN take, or an error
/// naming `op`.
pub(crate) fn int32(value: usize, op: &str) -> Result<i32> {
    i32::try_from(value).map_err(|_| {
        candle_core::Error::Msg(format!("{op}: size {value} is beyond 32-bit CUDA sizes"))
    })
}

/// The CPU forward of an op that runs on CUDA only (a custom op must have
/// one; the dispatch never sends CPU tensors here).
pub(crate) fn cuda_only(op: &str) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
    candle_core::bail!("{op} runs on CUDA only")
}

/// A buffer of `len` f32 for a kernel that writes every element.
pub(crate) fn output(dev: &CudaDevice, len: usize) -> Result<CudaSlice<f32>> {
    // Safety: callers launch kernels that write each element before any read.
    unsafe { dev.alloc::<f32>(len) }
}

/// CUDA C source compiled to PTX by NVRTC on first use, once per process.
pub(crate) struct NvrtcModule {
    /// The module name kernels are loaded under.
    pub name: &'static str,
    source: &'static str,
    ptx: OnceLock<std::result::Result<String, String>>,
}

impl NvrtcModule {
    pub(crate) const fn new(name: &'static str, source: &'static str) -> Self {
        Self {
            name,
            source,
            ptx: OnceLock::new(),
        }
    }

    /// The PTX (compiled now if this is the first call).
    pub(crate) fn ptx(&self) -> Result<&str> {
        self.ptx
            .get_or_init(|| {
                candle_core::cuda::cudarc::nvrtc::compile_ptx(self.source)
                    .map(|p| p.to_src())
                    .map_err(|e| e.to_string())
            })
            .as_deref()
            .map_err(|e| {
                candle_core::Error::Msg(format!("compiling the {} kernels: {e}", self.name))
            })
    }
}
