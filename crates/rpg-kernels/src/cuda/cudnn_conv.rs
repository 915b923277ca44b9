//! Convolution on CUDA through cuDNN: forward, input gradient and weight
//! gradient, grouped and depthwise included, f32 in NCHW.
//!
//! Each device keeps (per thread: cuDNN handles are neither Send nor Sync)
//! its cuDNN handle, one workspace that grows to the largest request and is
//! reused, and per convolution shape and precision the descriptors and the
//! algorithm cuDNN's heuristics chose for each pass, so both are made once
//! per shape and the three passes of a layer share the descriptors.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use candle_core::cuda::cudarc::cudnn::sys::{
    cudnnConvolutionBwdDataAlgo_t, cudnnConvolutionBwdFilterAlgo_t, cudnnConvolutionFwdAlgo_t,
    cudnnConvolutionMode_t, cudnnMathType_t, cudnnTensorFormat_t,
};
use candle_core::cuda::cudarc::cudnn::{
    ConvBackwardData, ConvBackwardFilter, ConvDescriptor, ConvForward, Cudnn, FilterDescriptor,
    TensorDescriptor,
};
use candle_core::cuda::cudarc::driver::CudaSlice;
use candle_core::cuda::{CudaDevice, DeviceId};
use candle_core::{CudaStorage, Layout, Result};

use super::{int32, output, view};
use crate::cpu::geometry::ConvGeometry;
use crate::precision::{Precision, precision};

const OP: &str = "conv2d (cuDNN)";

/// One convolution shape at one precision: its descriptors and, once
/// chosen, each pass's algorithm.
struct Conv {
    d: Descriptors,
    forward: Option<cudnnConvolutionFwdAlgo_t>,
    input_grad: Option<cudnnConvolutionBwdDataAlgo_t>,
    weight_grad: Option<cudnnConvolutionBwdFilterAlgo_t>,
}

/// What one device keeps between calls.
struct DeviceState {
    cudnn: Arc<Cudnn>,
    workspace: Option<CudaSlice<u8>>,
    convs: HashMap<(ConvGeometry, Precision), Conv>,
}

/// The shared workspace, grown to at least `bytes` (None for 0).
fn workspace<'a>(
    current: &'a mut Option<CudaSlice<u8>>,
    dev: &CudaDevice,
    bytes: usize,
) -> Result<Option<&'a mut CudaSlice<u8>>> {
    if bytes == 0 {
        return Ok(None);
    }
    if current.as_ref().is_none_or(|w| w.len() < bytes) {
        // Dropping the old buffer frees it in stream order.
        *current = None;
        // Safety: cuDNN treats the workspace as scratch; nothing reads it
        // before writing.
        *current = Some(unsafe { dev.alloc::<u8>(bytes) }?);
    }
    Ok(current.as_mut())
}

thread_local! {
    static DEVICES: RefCell<HashMap<DeviceId, DeviceState>> = RefCell::new(HashMap::new());
}

/// Runs `f` with the convolution `g` of this device (made on first use) and
/// the device's workspace.
fn with_conv<R>(
    dev: &CudaDevice,
    g: &ConvGeometry,
    f: impl FnOnce(&mut Conv, &mut Option<CudaSlice<u8>>) -> Result<R>,
) -> Result<R> {
    DEVICES.with(|devices| {
        let mut devices = devices.borrow_mut();
        let state = match devices.entry(dev.id()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(DeviceState {
                cudnn: Cudnn::new(dev.cuda_stream())?,
                workspace: None,
                convs: HashMap::new(),
            }),
        };
        let precision = precision();
        let conv = match state.convs.entry((*g, precision)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Conv {
                d: descriptors(&state.cudnn, g, precision)?,
                forward: None,
                input_grad: None,
                weight_grad: None,
            }),
        };
        f(conv, &mut state.workspace)
    })
}

/// The four descriptors of one convolution.
struct Descriptors {
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<f32>,
    w: FilterDescriptor<f32>,
    y: TensorDescriptor<f32>,
}

fn descriptors(cudnn: &Arc<Cudnn>, g: &ConvGeometry, precision: Precision) -> Result<Descriptors> {
    let dim = |value: usize| int32(value, OP);
    let mut conv = cudnn.create_conv2d::<f32>(
        [dim(g.padding)?; 2],
        [dim(g.stride)?; 2],
        [dim(g.dilation)?; 2],
        cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
    )?;
    conv.set_group_count(dim(g.groups)?)?;
    // PyTorch's choice: DEFAULT_MATH lets f32 convolutions use TF32 tensor
    // cores; FMA_MATH keeps them strict f32.
    conv.set_math_type(match precision {
        Precision::Tf32 => cudnnMathType_t::CUDNN_DEFAULT_MATH,
        Precision::F32 => cudnnMathType_t::CUDNN_FMA_MATH,
    })?;
    let nchw = cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    let x = cudnn.create_4d_tensor::<f32>(
        nchw,
        [
            dim(g.batch)?,
            dim(g.in_channels)?,
            dim(g.height)?,
            dim(g.width)?,
        ],
    )?;
    let w = cudnn.create_4d_filter::<f32>(
        nchw,
        [
            dim(g.out_channels)?,
            dim(g.in_per_group())?,
            dim(g.kernel_h)?,
            dim(g.kernel_w)?,
        ],
    )?;
    let y = cudnn.create_4d_tensor::<f32>(
        nchw,
        [
            dim(g.batch)?,
            dim(g.out_channels)?,
            dim(g.out_h())?,
            dim(g.out_w())?,
        ],
    )?;
    Ok(Descriptors { conv, x, w, y })
}

/// `y = conv(x, w)`.
pub(crate) fn forward(
    g: &ConvGeometry,
    xs: &CudaStorage,
    xl: &Layout,
    ws: &CudaStorage,
    wl: &Layout,
) -> Result<CudaStorage> {
    let dev = &xs.device;
    let (x, w) = (view(xs, xl, OP, "input")?, view(ws, wl, OP, "kernel")?);
    let mut y = output(dev, g.batch * g.out_channels * g.pixels())?;
    with_conv(dev, g, |conv, current| {
        let d = &conv.d;
        let op = ConvForward {
            conv: &d.conv,
            x: &d.x,
            w: &d.w,
            y: &d.y,
        };
        let algo = match conv.forward {
            Some(algo) => algo,
            None => *conv.forward.insert(op.pick_algorithm()?),
        };
        let workspace = workspace(current, dev, op.get_workspace_size(algo)?)?;
        // Safety: the views and the output match the descriptors' shapes.
        unsafe { op.launch(algo, workspace, (1.0, 0.0), &x, &w, &mut y) }?;
        Ok(())
    })?;
    Ok(CudaStorage::wrap_cuda_slice(y, dev.clone()))
}

/// `dx` from `dy` and `w`.
pub(crate) fn input_grad(
    g: &ConvGeometry,
    dys: &CudaStorage,
    dyl: &Layout,
    ws: &CudaStorage,
    wl: &Layout,
) -> Result<CudaStorage> {
    let dev = &dys.device;
    let (dy, w) = (
        view(dys, dyl, OP, "output gradient")?,
        view(ws, wl, OP, "kernel")?,
    );
    let mut dx = output(dev, g.batch * g.in_channels * g.height * g.width)?;
    with_conv(dev, g, |conv, current| {
        let d = &conv.d;
        let op = ConvBackwardData {
            conv: &d.conv,
            dx: &d.x,
            w: &d.w,
            dy: &d.y,
        };
        let algo = match conv.input_grad {
            Some(algo) => algo,
            None => *conv.input_grad.insert(op.pick_algorithm()?),
        };
        let workspace = workspace(current, dev, op.get_workspace_size(algo)?)?;
        // Safety: as in `forward`.
        unsafe { op.launch(algo, workspace, (1.0, 0.0), &mut dx, &w, &dy) }?;
        Ok(())
    })?;
    Ok(CudaStorage::wrap_cuda_slice(dx, dev.clone()))
}

/// `dw` from `x` and `dy`.
pub(crate) fn weight_grad(
    g: &ConvGeometry,
    xs: &CudaStorage,
    xl: &Layout,
    dys: &CudaStorage,
    dyl: &Layout,
) -> Result<CudaStorage> {
    let dev = &xs.device;
    let (x, dy) = (
        view(xs, xl, OP, "input")?,
        view(dys, dyl, OP, "output gradient")?,
    );
    let len = g.out_channels * g.in_per_group() * g.kernel_h * g.kernel_w;
    let mut dw = output(dev, len)?;
    with_conv(dev, g, |conv, current| {
        let d = &conv.d;
        let op = ConvBackwardFilter {
            conv: &d.conv,
            x: &d.x,
            dw: &d.w,
            dy: &d.y,
        };
        let algo = match conv.weight_grad {
            Some(algo) => algo,
            None => *conv.weight_grad.insert(op.pick_algorithm()?),
        };
        let workspace = workspace(current, dev, op.get_workspace_size(algo)?)?;
        // Safety: as in `forward`.
        unsafe { op.launch(algo, workspace, (1.0, 0.0), &x, &mut dw, &dy) }?;
        Ok(())
    })?;
    Ok(CudaStorage::wrap_cuda_slice(dw, dev.clone()))
}
