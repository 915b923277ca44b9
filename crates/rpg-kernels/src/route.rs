//! Which kernels run an op: the one place that looks at devices, dtypes and
//! the thread's [`KernelBackend`].
//!
//! Every op of this crate asks [`route`] once and then follows the answer:
//! [`Route::Cpu`] and [`Route::Cuda`] apply the op's custom op (whose
//! `cpu_fwd` / `cuda_fwd` call into `cpu::` / `cuda::`), [`Route::Candle`]
//! composes Candle's stock ops. Which devices have a kernel of their own is
//! the table in [`Op::kernels`]; adding a kernel (or Metal) means a line
//! there and a device method on the op (see ARCHITECTURE.md, "Adding a
//! kernel").

use candle_core::{DType, Device, Tensor};

use crate::backend::{KernelBackend, kernel_backend};

/// The ops of this crate, for [`route`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Conv,
    BatchNormTrain,
    /// Batch norm, residual add and ReLU as one training op.
    BatchNormAddRelu,
    /// Batch norm in evaluation, with its ReLU or residual add and ReLU.
    BatchNormEval,
    AddRelu,
    Relu,
    Relu6,
    Linear,
    MaxPool,
    ChannelBias,
}

/// Where an op runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Route {
    /// Candle's stock ops: other dtypes and devices, or a thread that chose
    /// [`KernelBackend::Candle`].
    Candle,
    /// This crate's CPU kernels (`cpu::`).
    Cpu,
    /// This crate's CUDA kernels (`cuda::`; cuDNN for the conv).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    Cuda,
}

/// The devices an op has kernels of its own for.
struct Kernels {
    cpu: bool,
    cuda: bool,
}

impl Op {
    /// The table of kernels: every op has a CPU kernel; on CUDA the conv
    /// runs cuDNN (`cudnn` feature), batch norm and add-ReLU run NVRTC
    /// kernels (`cuda` feature), the rest run Candle's CUDA ops.
    fn kernels(self) -> Kernels {
        let cuda = match self {
            Op::Conv => cfg!(feature = "cudnn"),
            Op::BatchNormTrain | Op::AddRelu => cfg!(feature = "cuda"),
            Op::BatchNormAddRelu
            | Op::BatchNormEval
            | Op::Relu
            | Op::Relu6
            | Op::Linear
            | Op::MaxPool
            | Op::ChannelBias => false,
        };
        Kernels { cpu: true, cuda }
    }
}

/// The route of `op` over these operands: this crate's kernels when every
/// operand is f32 on one device that has a kernel for `op` and the thread
/// has not chosen Candle's ops; Candle's otherwise.
pub(crate) fn route(op: Op, operands: &[&Tensor]) -> Route {
    let Some(first) = operands.first() else {
        return Route::Candle;
    };
    let uniform = operands
        .iter()
        .all(|t| t.dtype() == DType::F32 && t.device().same_device(first.device()));
    if !uniform || kernel_backend() == KernelBackend::Candle {
        return Route::Candle;
    }
    let kernels = op.kernels();
    match first.device() {
        Device::Cpu if kernels.cpu => Route::Cpu,
        Device::Cuda(_) if kernels.cuda => Route::Cuda,
        _ => Route::Candle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(dtype: DType) -> Tensor {
        Tensor::zeros(4, dtype, &Device::Cpu).unwrap()
    }

    #[test]
    fn f32_on_the_cpu_takes_the_cpu_kernels_unless_a_scope_chose_candle() {
        let (a, b) = (t(DType::F32), t(DType::F32));
        assert_eq!(route(Op::Conv, &[&a, &b]), Route::Cpu);
        let _candle = KernelBackend::Candle.scope();
        assert_eq!(route(Op::Conv, &[&a, &b]), Route::Candle);
    }

    #[test]
    fn any_other_dtype_or_no_operand_takes_candles_ops() {
        let (a, b) = (t(DType::F32), t(DType::F64));
        assert_eq!(route(Op::AddRelu, &[&a, &b]), Route::Candle);
        assert_eq!(route(Op::Relu, &[&b]), Route::Candle);
        assert_eq!(route(Op::Relu, &[]), Route::Candle);
    }
}
