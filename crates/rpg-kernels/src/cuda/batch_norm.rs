//! Batch norm's training pass on CUDA as four kernels (compiled once per
//! process with NVRTC), instead of candle-nn's chain of broadcast ops:
//! per-channel statistics, the normalisation with the ReLU fused, and for
//! the backward the per-channel sums and the input gradient.
//!
//! Each op returns one packed tensor (a custom op has one output): the
//! forward `[y (N*C*H*W), mean (C), biased variance (C)]`, the backward
//! `[dx (N*C*H*W), dgamma (C), dbeta (C)]`; the caller narrows it. Sums run
//! in a fixed order per block (no atomics), so results repeat exactly.

use super::{NvrtcModule, cuda_only, int32, output, view};
use candle_core::cuda::WrapErr;
use candle_core::cuda::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::{CpuStorage, CudaStorage, CustomOp3, Layout, Result, Shape, Storage, Tensor};

const SOURCE: &str = r#"
#define THREADS 256

__device__ float block_sum(float v, float* shared) {
    shared[threadIdx.x] = v;
    __syncthreads();
    for (int s = THREADS / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) shared[threadIdx.x] += shared[threadIdx.x + s];
        __syncthreads();
    }
    float total = shared[0];
    __syncthreads();
    return total;
}

// The gradient through the fused ReLU, passed where the normalised value
// v = (x - mean) * inv * w + b is >= 0 (Candle's ReLU gradient, 1 at zero):
// recomputed as the forward computed it, since y = 0 cannot tell v = 0 from
// v < 0.
__device__ float gate(float dy, float x, float m, float inv, float w, float b, int relu) {
    return (relu && (x - m) * inv * w + b < 0.f) ? 0.f : dy;
}

// Mean and biased variance of each channel of x [n, c, hw]; one block per
// channel, two passes (the centred second pass keeps the variance exact).
extern "C" __global__ void rpg_bn_stats(const float* x, float* mean, float* var,
                                        int n, int c, int hw) {
    __shared__ float shared[THREADS];
    const int ch = blockIdx.x;
    const long count = (long)n * hw;
    float s = 0.f;
    for (long i = threadIdx.x; i < count; i += THREADS) {
        long b = i / hw, p = i - b * hw;
        s += x[(b * c + ch) * hw + p];
    }
    const float m = block_sum(s, shared) / (float)count;
    float q = 0.f;
    for (long i = threadIdx.x; i < count; i += THREADS) {
        long b = i / hw, p = i - b * hw;
        float d = x[(b * c + ch) * hw + p] - m;
        q += d * d;
    }
    const float v = block_sum(q, shared) / (float)count;
    if (threadIdx.x == 0) { mean[ch] = m; var[ch] = v; }
}

extern "C" __global__ void rpg_bn_apply(const float* x, float* y, const float* mean,
                                        const float* var, const float* w, const float* b,
                                        float eps, int relu, long total, int c, int hw) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total;
         i += (long)gridDim.x * blockDim.x) {
        int ch = (int)((i / hw) % c);
        float inv = 1.f / sqrtf(var[ch] + eps);
        float v = (x[i] - mean[ch]) * inv * w[ch] + b[ch];
        y[i] = (relu && v < 0.f) ? 0.f : v;
    }
}

// dgamma = sum(g * xhat), dbeta = sum(g) per channel, g the gradient through
// the ReLU; one block per channel.
extern "C" __global__ void rpg_bn_bwd_sums(const float* x, const float* dy,
                                           const float* mean, const float* var,
                                           const float* w, const float* bias,
                                           float* dgamma, float* dbeta, float eps, int relu,
                                           int n, int c, int hw) {
    __shared__ float shared[THREADS];
    const int ch = blockIdx.x;
    const long count = (long)n * hw;
    const float m = mean[ch];
    const float inv = 1.f / sqrtf(var[ch] + eps);
    float s1 = 0.f, s2 = 0.f;
    for (long i = threadIdx.x; i < count; i += THREADS) {
        long b = i / hw, p = i - b * hw;
        long at = (b * c + ch) * hw + p;
        float g = gate(dy[at], x[at], m, inv, w[ch], bias[ch], relu);
        s1 += g;
        s2 += g * (x[at] - m);
    }
    const float sum_g = block_sum(s1, shared);
    const float sum_gx = block_sum(s2, shared);
    if (threadIdx.x == 0) {
        dbeta[ch] = sum_g;
        dgamma[ch] = sum_gx / sqrtf(var[ch] + eps);
    }
}

// dx = w * inv * (g - dbeta / M - xhat * dgamma / M).
extern "C" __global__ void rpg_bn_bwd_dx(const float* x, const float* dy,
                                         const float* mean, const float* var, const float* w,
                                         const float* bias, const float* dgamma,
                                         const float* dbeta, float* dx,
                                         float eps, int relu, long total, int c, int hw,
                                         float count) {
    for (long i = blockIdx.x * (long)blockDim.x + threadIdx.x; i < total;
         i += (long)gridDim.x * blockDim.x) {
        int ch = (int)((i / hw) % c);
        float inv = 1.f / sqrtf(var[ch] + eps);
        float xhat = (x[i] - mean[ch]) * inv;
        float g = gate(dy[i], x[i], mean[ch], inv, w[ch], bias[ch], relu);
        dx[i] = w[ch] * inv * (g - dbeta[ch] / count - xhat * dgamma[ch] / count);
    }
}
"#;

static KERNELS: NvrtcModule = NvrtcModule::new("rpg_batch_norm", SOURCE);
const THREADS: u32 = 256;
const OP: &str = "batch norm";

fn per_channel(c: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (c as u32, 1, 1),
        block_dim: (THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The shape of one batch norm: `[n, c, hw]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BnShape {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
}

impl BnShape {
    /// `[n, c, rest]` of a batch-norm input of rank 2 or more.
    pub(crate) fn of(dims: &[usize]) -> Self {
        Self {
            n: dims[0],
            c: dims[1],
            hw: dims[2..].iter().product(),
        }
    }

    pub(crate) fn total(&self) -> usize {
        self.n * self.c * self.hw
    }

    fn ints(&self) -> Result<(i32, i32, i32)> {
        Ok((int32(self.n, OP)?, int32(self.c, OP)?, int32(self.hw, OP)?))
    }
}

/// Batch norm's training forward, `(x, weight, bias) -> [y, mean, var]`
/// packed in one tensor of `total + 2c` values (the CUDA side of
/// `batch_norm::BnTrain`; the caller narrows it).
pub(crate) fn train_forward(
    (xs, xl): (&CudaStorage, &Layout),
    (ws, wl): (&CudaStorage, &Layout),
    (bs, bl): (&CudaStorage, &Layout),
    eps: f32,
    relu: bool,
) -> Result<(CudaStorage, Shape)> {
    let dev = &xs.device;
    let s = BnShape::of(xl.dims());
    let (n, c, hw) = s.ints()?;
    let (x, w, b) = (
        view(xs, xl, OP, "input")?,
        view(ws, wl, OP, "scale")?,
        view(bs, bl, OP, "shift")?,
    );
    let total = s.total();
    let mut out = output(dev, total + 2 * s.c)?;
    {
        let (mut y, mut stats) = out.split_at_mut(total);
        let (mut mean, mut var) = stats.split_at_mut(s.c);
        {
            let f = dev.get_or_load_custom_func("rpg_bn_stats", KERNELS.name, KERNELS.ptx()?)?;
            let mut args = f.builder();
            args.arg(&x)
                .arg(&mut mean)
                .arg(&mut var)
                .arg(&n)
                .arg(&c)
                .arg(&hw);
            // Safety: the argument list matches the kernel's signature.
            unsafe { args.launch(per_channel(s.c)) }.w()?;
        }
        let (mean, var) = (mean.slice(..), var.slice(..));
        let (relu, total_i) = (i32::from(relu), total as i64);
        let f = dev.get_or_load_custom_func("rpg_bn_apply", KERNELS.name, KERNELS.ptx()?)?;
        let mut args = f.builder();
        args.arg(&x)
            .arg(&mut y)
            .arg(&mean)
            .arg(&var)
            .arg(&w)
            .arg(&b);
        args.arg(&eps).arg(&relu).arg(&total_i).arg(&c).arg(&hw);
        // Safety: as above.
        unsafe { args.launch(LaunchConfig::for_num_elems(total as u32)) }.w()?;
    }
    let shape = Shape::from(total + 2 * s.c);
    Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
}

/// The backward of [`train_forward`]: `(dx, dgamma, dbeta)` from the input,
/// the affine parameters, the packed forward result and its gradient.
pub(crate) fn train_backward(
    x: &Tensor,
    (weight, bias): (&Tensor, &Tensor),
    packed: &Tensor,
    grad_packed: &Tensor,
    eps: f32,
    relu: bool,
) -> Result<(Tensor, Tensor, Tensor)> {
    let s = BnShape::of(x.dims());
    let total = s.total();
    let dy = grad_packed.narrow(0, 0, total)?.contiguous()?;
    let grads = x.contiguous()?.apply_op3_no_bwd(
        &dy,
        &packed.contiguous()?,
        &BnBackwardCuda {
            shape: s,
            eps,
            relu,
            weight: weight.contiguous()?,
            bias: bias.contiguous()?,
        },
    )?;
    let dx = grads.narrow(0, 0, total)?.reshape(x.shape())?;
    let dgamma = grads.narrow(0, total, s.c)?;
    let dbeta = grads.narrow(0, total + s.c, s.c)?;
    Ok((dx, dgamma, dbeta))
}

/// `(x, dy, [y, mean, var]) -> [dx, dgamma, dbeta]`.
struct BnBackwardCuda {
    shape: BnShape,
    eps: f32,
    relu: bool,
    weight: Tensor,
    bias: Tensor,
}

impl CustomOp3 for BnBackwardCuda {
    fn name(&self) -> &'static str {
        "rpg-batch-norm-backward-cuda"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cuda_only(self.name())
    }

    fn cuda_fwd(
        &self,
        xs: &CudaStorage,
        xl: &Layout,
        dys: &CudaStorage,
        dyl: &Layout,
        rs: &CudaStorage,
        rl: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let dev = &xs.device;
        let s = self.shape;
        let (n, c, hw) = s.ints()?;
        let total = s.total();
        let (x, dy, packed) = (
            view(xs, xl, OP, "input")?,
            view(dys, dyl, OP, "gradient")?,
            view(rs, rl, OP, "forward")?,
        );
        let mean = packed.slice(total..total + s.c);
        let var = packed.slice(total + s.c..total + 2 * s.c);
        let (weight_storage, weight_layout) = self.weight.storage_and_layout();
        let Storage::Cuda(ws) = &*weight_storage else {
            candle_core::bail!("batch norm (CUDA): the scale is not on the GPU")
        };
        let w = view(ws, weight_layout, OP, "scale")?;
        let (bias_storage, bias_layout) = self.bias.storage_and_layout();
        let Storage::Cuda(bs) = &*bias_storage else {
            candle_core::bail!("batch norm (CUDA): the shift is not on the GPU")
        };
        let b = view(bs, bias_layout, OP, "shift")?;
        let mut out = output(dev, total + 2 * s.c)?;
        {
            let (mut dx, mut sums) = out.split_at_mut(total);
            let (mut dgamma, mut dbeta) = sums.split_at_mut(s.c);
            let relu = i32::from(self.relu);
            {
                let f =
                    dev.get_or_load_custom_func("rpg_bn_bwd_sums", KERNELS.name, KERNELS.ptx()?)?;
                let mut args = f.builder();
                args.arg(&x).arg(&dy).arg(&mean).arg(&var).arg(&w).arg(&b);
                args.arg(&mut dgamma)
                    .arg(&mut dbeta)
                    .arg(&self.eps)
                    .arg(&relu);
                args.arg(&n).arg(&c).arg(&hw);
                // Safety: the argument list matches the kernel's signature.
                unsafe { args.launch(per_channel(s.c)) }.w()?;
            }
            let (dgamma, dbeta) = (dgamma.slice(..), dbeta.slice(..));
            let (total_i, count) = (total as i64, (s.n * s.hw) as f32);
            let f = dev.get_or_load_custom_func("rpg_bn_bwd_dx", KERNELS.name, KERNELS.ptx()?)?;
            let mut args = f.builder();
            args.arg(&x).arg(&dy).arg(&mean).arg(&var).arg(&w).arg(&b);
            args.arg(&dgamma)
                .arg(&dbeta)
                .arg(&mut dx)
                .arg(&self.eps)
                .arg(&relu);
            args.arg(&total_i).arg(&c).arg(&hw).arg(&count);
            // Safety: as above.
            unsafe { args.launch(LaunchConfig::for_num_elems(total as u32)) }.w()?;
        }
        let shape = Shape::from(total + 2 * s.c);
        Ok((CudaStorage::wrap_cuda_slice(out, dev.clone()), shape))
    }
}
