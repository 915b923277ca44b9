//! Convolution on CUDA through cuDNN: forward, input gradient and weight
//! gradient, grouped and depthwise included, f32 in NCHW.
//!
//! Each device keeps (per thread: cuDNN handles are neither Send nor Sync)
//! its cuDNN handle, one workspace that grows to the largest request and is
//! reused, and the algorithm cuDNN's heuristics chose for each convolution
//! shape and precision, so the choice is made once per shape.

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

use super::{output, view};
use crate::cpu::geometry::ConvGeometry;

const OP: &str = "conv2d (cuDNN)";
use crate::precision::{Precision, precision};

type Key = (ConvGeometry, Precision);

/// What one device keeps between calls.
struct DeviceState {
    cudnn: Arc<Cudnn>,
    workspace: Option<CudaSlice<u8>>,
    forward: HashMap<Key, cudnnConvolutionFwdAlgo_t>,
    input_grad: HashMap<Key, cudnnConvolutionBwdDataAlgo_t>,
    weight_grad: HashMap<Key, cudnnConvolutionBwdFilterAlgo_t>,
}

impl DeviceState {
    /// The shared workspace, grown to at least `bytes` (None for 0).
    fn workspace(&mut self, dev: &CudaDevice, bytes: usize) -> Result<Option<&mut CudaSlice<u8>>> {
        if bytes == 0 {
            return Ok(None);
        }
        if self.workspace.as_ref().is_none_or(|w| w.len() < bytes) {
            // Dropping the old buffer frees it in stream order.
            self.workspace = None;
            // Safety: cuDNN treats the workspace as scratch; nothing reads
            // it before writing.
            self.workspace = Some(unsafe { dev.alloc::<u8>(bytes) }?);
        }
        Ok(self.workspace.as_mut())
    }
}

thread_local! {
    static DEVICES: RefCell<HashMap<DeviceId, DeviceState>> = RefCell::new(HashMap::new());
}

fn with_state<R>(dev: &CudaDevice, f: impl FnOnce(&mut DeviceState) -> Result<R>) -> Result<R> {
    DEVICES.with(|devices| {
        let mut devices = devices.borrow_mut();
        let state = match devices.entry(dev.id()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(DeviceState {
                cudnn: Cudnn::new(dev.cuda_stream())?,
                workspace: None,
                forward: HashMap::new(),
                input_grad: HashMap::new(),
                weight_grad: HashMap::new(),
            }),
        };
        f(state)
    })
}

/// The four descriptors of one convolution.
struct Descriptors {
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<f32>,
    w: FilterDescriptor<f32>,
    y: TensorDescriptor<f32>,
}

fn dim(value: usize) -> Result<i32> {
    i32::try_from(value).map_err(|_| {
        candle_core::Error::Msg(format!(
            "conv2d: dimension {value} is beyond cuDNN's 32-bit sizes"
        ))
    })
}

fn descriptors(cudnn: &Arc<Cudnn>, g: &ConvGeometry, precision: Precision) -> Result<Descriptors> {
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
    let precision = precision();
    with_state(dev, |state| {
        let d = descriptors(&state.cudnn, g, precision)?;
        let op = ConvForward {
            conv: &d.conv,
            x: &d.x,
            w: &d.w,
            y: &d.y,
        };
        let algo = match state.forward.entry((*g, precision)) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => *e.insert(op.pick_algorithm()?),
        };
        let bytes = op.get_workspace_size(algo)?;
        let workspace = state.workspace(dev, bytes)?;
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
    let precision = precision();
    with_state(dev, |state| {
        let d = descriptors(&state.cudnn, g, precision)?;
        let op = ConvBackwardData {
            conv: &d.conv,
            dx: &d.x,
            w: &d.w,
            dy: &d.y,
        };
        let algo = match state.input_grad.entry((*g, precision)) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => *e.insert(op.pick_algorithm()?),
        };
        let bytes = op.get_workspace_size(algo)?;
        let workspace = state.workspace(dev, bytes)?;
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
    let precision = precision();
    with_state(dev, |state| {
        let d = descriptors(&state.cudnn, g, precision)?;
        let op = ConvBackwardFilter {
            conv: &d.conv,
            x: &d.x,
            dw: &d.w,
            dy: &d.y,
        };
        let algo = match state.weight_grad.entry((*g, precision)) {
            Entry::Occupied(e) => *e.get(),
            Entry::Vacant(e) => *e.insert(op.pick_algorithm()?),
        };
        let bytes = op.get_workspace_size(algo)?;
        let workspace = state.workspace(dev, bytes)?;
        // Safety: as in `forward`.
        unsafe { op.launch(algo, workspace, (1.0, 0.0), &x, &mut dw, &dy) }?;
        Ok(())
    })?;
    Ok(CudaStorage::wrap_cuda_slice(dw, dev.clone()))
}
