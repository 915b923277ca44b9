//! `max(a + b, 0)` (a residual block's end) on CUDA as one kernel each way,
//! instead of Candle's add, ReLU and the ReLU's compare-and-multiply
//! backward. The gradient is Candle's: passed where `a + b >= 0`. The op
//! that calls these is `activation::AddRelu`.

use candle_core::cuda::WrapErr;
use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::{CudaStorage, Layout, Result};

use super::{NvrtcModule, output, view};

const SOURCE: &str = r#"
extern "C" __global__ void rpg_add_relu(const float* a, const float* b, float* y, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        float s = a[i] + b[i];
        y[i] = s < 0.f ? 0.f : s;
    }
}

extern "C" __global__ void rpg_add_relu_grad(const float* a, const float* b, const float* dy,
                                             float* dx, long n) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < n;
         i += (long)gridDim.x * blockDim.x) {
        dx[i] = (a[i] + b[i] >= 0.f) ? dy[i] : 0.f;
    }
}
"#;

static KERNELS: NvrtcModule = NvrtcModule::new("rpg_activation", SOURCE);
const OP: &str = "add_relu";

/// `max(a + b, 0)` of two contiguous operands of one shape.
pub(crate) fn add_relu(
    sa: &CudaStorage,
    la: &Layout,
    sb: &CudaStorage,
    lb: &Layout,
) -> Result<CudaStorage> {
    let dev = &sa.device;
    let (a, b) = (
        view(sa, la, OP, "first input")?,
        view(sb, lb, OP, "second input")?,
    );
    let n = la.shape().elem_count();
    let mut y = output(dev, n)?;
    // A launch of zero blocks is an error; there is nothing to compute.
    if n > 0 {
        let n_i = n as i64;
        let f = dev.get_or_load_custom_func("rpg_add_relu", KERNELS.name, KERNELS.ptx()?)?;
        let mut args = f.builder();
        args.arg(&a).arg(&b).arg(&mut y).arg(&n_i);
        // Safety: the argument list matches the kernel's signature.
        unsafe { args.launch(LaunchConfig::for_num_elems(n as u32)) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

/// `dy where a + b >= 0, else 0`.
pub(crate) fn add_relu_grad(
    (sa, la): (&CudaStorage, &Layout),
    (sb, lb): (&CudaStorage, &Layout),
    (sd, ld): (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let dev = &sa.device;
    let (a, b) = (
        view(sa, la, OP, "first input")?,
        view(sb, lb, OP, "second input")?,
    );
    let dy = view(sd, ld, OP, "gradient")?;
    let n = la.shape().elem_count();
    let mut dx = output(dev, n)?;
    if n > 0 {
        let n_i = n as i64;
        let f = dev.get_or_load_custom_func("rpg_add_relu_grad", KERNELS.name, KERNELS.ptx()?)?;
        let mut args = f.builder();
        args.arg(&a).arg(&b).arg(&dy).arg(&mut dx).arg(&n_i);
        // Safety: as above.
        unsafe { args.launch(LaunchConfig::for_num_elems(n as u32)) }.w()?;
    }
    Ok(CudaStorage::wrap_cuda_slice(dx, dev.clone()))
}
