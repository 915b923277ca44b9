//! Convolution on CUDA through cuDNN: forward, input gradient and weight
//! gradient, grouped and depthwise included, f32 in NCHW.
//!
//! Each device keeps (per thread: cuDNN handles are neither Send nor Sync)
//! its cuDNN handle, one workspace that grows to the largest request and is
//! reused, and per convolution shape and precision the descriptors and each
//! pass's algorithm with its math type (`conv_algorithm.rs`), so both are
//! made once per shape and the three passes of a layer share the
//! descriptors. cuDNN's own calls are used directly (cudarc's `cudnn::result`):
//! cudarc's safe wrapper keeps only the first heuristic result and drops its
//! math type, which strict f32 needs to filter on and every pass needs set
//! on the descriptor before it runs.

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::ffi::c_void;
use std::sync::Arc;

use candle_core::cuda::cudarc::cudnn::{result as cudnn, sys};
use candle_core::cuda::cudarc::driver::{
    CudaSlice, CudaStream, DevicePtr, DevicePtrMut, SyncOnDrop,
};
use candle_core::cuda::{CudaDevice, DeviceId};
use candle_core::{CudaStorage, Layout, Result};

use super::{int32, output, view};
use crate::conv_algorithm::{Choice, MathType, Ranked, choose};
use crate::cpu::geometry::ConvGeometry;
use crate::precision::{Precision, precision};

const OP: &str = "conv2d (cuDNN)";

/// A cuDNN handle bound to a device's stream.
struct Handle(sys::cudnnHandle_t);

impl Drop for Handle {
    fn drop(&mut self) {
        // Safety: made by `create_handle`, destroyed once.
        let _ = unsafe { cudnn::destroy_handle(self.0) };
    }
}

struct TensorDesc(sys::cudnnTensorDescriptor_t);

impl Drop for TensorDesc {
    fn drop(&mut self) {
        // Safety: made by `create_tensor_descriptor`, destroyed once.
        let _ = unsafe { cudnn::destroy_tensor_descriptor(self.0) };
    }
}

struct FilterDesc(sys::cudnnFilterDescriptor_t);

impl Drop for FilterDesc {
    fn drop(&mut self) {
        // Safety: made by `create_filter_descriptor`, destroyed once.
        let _ = unsafe { cudnn::destroy_filter_descriptor(self.0) };
    }
}

struct ConvDesc(sys::cudnnConvolutionDescriptor_t);

impl Drop for ConvDesc {
    fn drop(&mut self) {
        // Safety: made by `create_convolution_descriptor`, destroyed once.
        let _ = unsafe { cudnn::destroy_convolution_descriptor(self.0) };
    }
}

/// The four descriptors of one convolution.
struct Descriptors {
    conv: ConvDesc,
    x: TensorDesc,
    w: FilterDesc,
    y: TensorDesc,
}

/// One convolution shape at one precision: its descriptors and, once
/// chosen, each pass's algorithm and math type.
struct Conv {
    d: Descriptors,
    forward: Option<Choice<sys::cudnnConvolutionFwdAlgo_t>>,
    input_grad: Option<Choice<sys::cudnnConvolutionBwdDataAlgo_t>>,
    weight_grad: Option<Choice<sys::cudnnConvolutionBwdFilterAlgo_t>>,
}

/// What one device keeps between calls.
struct DeviceState {
    handle: Handle,
    stream: Arc<CudaStream>,
    workspace: Option<CudaSlice<u8>>,
    convs: HashMap<(ConvGeometry, Precision), Conv>,
}

thread_local! {
    static DEVICES: RefCell<HashMap<DeviceId, DeviceState>> = RefCell::new(HashMap::new());
}

/// A cuDNN status as an error naming what failed.
fn check<T>(result: std::result::Result<T, cudnn::CudnnError>, what: &str) -> Result<T> {
    result.map_err(|e| candle_core::Error::Msg(format!("{OP}: {what}: {e:?}")))
}

fn new_state(dev: &CudaDevice) -> Result<DeviceState> {
    let stream = dev.cuda_stream();
    stream
        .context()
        .bind_to_thread()
        .map_err(|e| candle_core::Error::Msg(format!("{OP}: binding the device: {e:?}")))?;
    let handle = Handle(check(cudnn::create_handle(), "creating a handle")?);
    // Safety: a live handle and the device's stream.
    check(
        unsafe { cudnn::set_stream(handle.0, stream.cu_stream() as *mut _) },
        "setting the stream",
    )?;
    Ok(DeviceState {
        handle,
        stream,
        workspace: None,
        convs: HashMap::new(),
    })
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

/// What a pass gets: the handle, the stream, this shape's descriptors and
/// choices, and the workspace.
struct Pass<'a> {
    handle: sys::cudnnHandle_t,
    stream: &'a Arc<CudaStream>,
    conv: &'a mut Conv,
    workspace: &'a mut Option<CudaSlice<u8>>,
    precision: Precision,
}

/// Runs `f` with the convolution `g` of this device (made on first use).
fn with_conv<R>(
    dev: &CudaDevice,
    g: &ConvGeometry,
    f: impl FnOnce(Pass<'_>) -> Result<R>,
) -> Result<R> {
    DEVICES.with(|devices| {
        let mut devices = devices.borrow_mut();
        let state = match devices.entry(dev.id()) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(new_state(dev)?),
        };
        let precision = precision();
        let conv = match state.convs.entry((*g, precision)) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(Conv {
                d: descriptors(g, precision)?,
                forward: None,
                input_grad: None,
                weight_grad: None,
            }),
        };
        f(Pass {
            handle: state.handle.0,
            stream: &state.stream,
            conv,
            workspace: &mut state.workspace,
            precision,
        })
    })
}

fn to_sys(math: MathType) -> sys::cudnnMathType_t {
    match math {
        MathType::Default => sys::cudnnMathType_t::CUDNN_DEFAULT_MATH,
        MathType::TensorOp => sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
        MathType::TensorOpAllowConversion => {
            sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION
        }
        MathType::Fma => sys::cudnnMathType_t::CUDNN_FMA_MATH,
    }
}

fn from_sys(math: sys::cudnnMathType_t) -> MathType {
    match math {
        sys::cudnnMathType_t::CUDNN_DEFAULT_MATH => MathType::Default,
        sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH => MathType::TensorOp,
        sys::cudnnMathType_t::CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION => {
            MathType::TensorOpAllowConversion
        }
        sys::cudnnMathType_t::CUDNN_FMA_MATH => MathType::Fma,
    }
}

/// Sets the descriptor's math type (before a query and before each pass).
fn set_math(conv: &ConvDesc, math: MathType) -> Result<()> {
    // Safety: a live descriptor.
    check(
        unsafe { cudnn::set_convolution_math_type(conv.0, to_sys(math)) },
        "setting the math type",
    )
}

fn descriptors(g: &ConvGeometry, precision: Precision) -> Result<Descriptors> {
    let dim = |value: usize| int32(value, OP);
    let f32 = sys::cudnnDataType_t::CUDNN_DATA_FLOAT;
    let nchw = sys::cudnnTensorFormat_t::CUDNN_TENSOR_NCHW;
    let conv = ConvDesc(check(
        cudnn::create_convolution_descriptor(),
        "creating a descriptor",
    )?);
    let x = TensorDesc(check(
        cudnn::create_tensor_descriptor(),
        "creating a descriptor",
    )?);
    let y = TensorDesc(check(
        cudnn::create_tensor_descriptor(),
        "creating a descriptor",
    )?);
    let w = FilterDesc(check(
        cudnn::create_filter_descriptor(),
        "creating a descriptor",
    )?);
    // Safety: live descriptors, set with values checked to fit i32.
    unsafe {
        check(
            cudnn::set_convolution2d_descriptor(
                conv.0,
                dim(g.padding)?,
                dim(g.padding)?,
                dim(g.stride)?,
                dim(g.stride)?,
                dim(g.dilation)?,
                dim(g.dilation)?,
                sys::cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
                f32,
            ),
            "describing the convolution",
        )?;
        check(
            cudnn::set_convolution_group_count(conv.0, dim(g.groups)?),
            "setting the groups",
        )?;
        check(
            cudnn::set_tensor4d_descriptor(
                x.0,
                nchw,
                f32,
                [
                    dim(g.batch)?,
                    dim(g.in_channels)?,
                    dim(g.height)?,
                    dim(g.width)?,
                ],
            ),
            "describing the input",
        )?;
        check(
            cudnn::set_filter4d_descriptor(
                w.0,
                f32,
                nchw,
                [
                    dim(g.out_channels)?,
                    dim(g.in_per_group())?,
                    dim(g.kernel_h)?,
                    dim(g.kernel_w)?,
                ],
            ),
            "describing the kernel",
        )?;
        check(
            cudnn::set_tensor4d_descriptor(
                y.0,
                nchw,
                f32,
                [
                    dim(g.batch)?,
                    dim(g.out_channels)?,
                    dim(g.out_h())?,
                    dim(g.out_w())?,
                ],
            ),
            "describing the output",
        )?;
    }
    // The heuristics rank for the descriptor's math type: PyTorch's
    // setting for the query (DEFAULT lets f32 use TF32, FMA keeps it
    // strict); each pass then runs with its own result's math type.
    let conv_math = match precision {
        Precision::Tf32 => MathType::Default,
        Precision::F32 => MathType::Fma,
    };
    set_math(&conv, conv_math)?;
    Ok(Descriptors { conv, x, w, y })
}

/// The choice from cuDNN's ranked list, or an error naming the shape.
fn chosen<A: Copy>(
    ranked: impl IntoIterator<Item = Ranked<A>>,
    precision: Precision,
    pass: &str,
    g: &ConvGeometry,
) -> Result<Choice<A>> {
    choose(ranked, precision).ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "{OP}: cuDNN offers no {pass} algorithm for {g:?} at precision {precision} \
             (with --precision f32, only plain f32 algorithms qualify; try --precision tf32)"
        ))
    })
}

fn supported(status: sys::cudnnStatus_t) -> bool {
    status == sys::cudnnStatus_t::CUDNN_STATUS_SUCCESS
}

/// The workspace's pointer for a cuDNN call on `stream` (null when there
/// is none), and the guard to keep until the call is queued.
fn workspace_ptr<'a>(
    space: Option<&'a mut CudaSlice<u8>>,
    stream: &'a Arc<CudaStream>,
) -> (*mut c_void, Option<SyncOnDrop<'a>>) {
    match space {
        Some(s) => {
            let (ptr, sync) = DevicePtrMut::device_ptr_mut(s, stream);
            (ptr as *mut c_void, Some(sync))
        }
        None => (std::ptr::null_mut(), None),
    }
}

/// The raw pointer of a device slice, for a cuDNN call on `stream`.
macro_rules! ptr {
    ($slice:expr, $stream:expr) => {
        DevicePtr::device_ptr(&$slice, $stream)
    };
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
    with_conv(dev, g, |p| {
        let d = &p.conv.d;
        let choice = match p.conv.forward {
            Some(choice) => choice,
            None => {
                const COUNT: usize =
                    sys::cudnnConvolutionFwdAlgo_t::CUDNN_CONVOLUTION_FWD_ALGO_COUNT as usize;
                // Safety: zeroed perf records are valid (every field's 0 is).
                let mut perf =
                    [unsafe { std::mem::zeroed::<sys::cudnnConvolutionFwdAlgoPerf_t>() }; COUNT];
                let mut returned = 0;
                // Safety: live handle and descriptors; `perf` holds COUNT.
                check(
                    unsafe {
                        cudnn::get_convolution_forward_algorithm(
                            p.handle,
                            d.x.0,
                            d.w.0,
                            d.conv.0,
                            d.y.0,
                            COUNT as i32,
                            &mut returned,
                            perf.as_mut_ptr(),
                        )
                    },
                    "ranking forward algorithms",
                )?;
                let ranked = perf[..(returned.max(0) as usize).min(COUNT)]
                    .iter()
                    .map(|r| Ranked {
                        algo: r.algo,
                        supported: supported(r.status),
                        math: from_sys(r.mathType),
                    });
                *p.conv
                    .forward
                    .insert(chosen(ranked, p.precision, "forward", g)?)
            }
        };
        set_math(&d.conv, choice.math)?;
        // Safety: live handle and descriptors.
        let bytes = check(
            unsafe {
                cudnn::get_convolution_forward_workspace_size(
                    p.handle,
                    d.x.0,
                    d.w.0,
                    d.conv.0,
                    d.y.0,
                    choice.algo,
                )
            },
            "sizing the forward workspace",
        )?;
        let space = workspace(p.workspace, dev, bytes)?;
        let (alpha, beta) = (1f32, 0f32);
        let (x_ptr, _x) = ptr!(x, p.stream);
        let (w_ptr, _w) = ptr!(w, p.stream);
        let (y_ptr, _y) = DevicePtrMut::device_ptr_mut(&mut y, p.stream);
        let (space_ptr, _space) = workspace_ptr(space, p.stream);
        // Safety: the pointers hold the shapes the descriptors describe, on
        // the handle's stream; the workspace holds `bytes`.
        check(
            unsafe {
                cudnn::convolution_forward(
                    p.handle,
                    &alpha as *const f32 as *const c_void,
                    d.x.0,
                    x_ptr as *const c_void,
                    d.w.0,
                    w_ptr as *const c_void,
                    d.conv.0,
                    choice.algo,
                    space_ptr,
                    bytes,
                    &beta as *const f32 as *const c_void,
                    d.y.0,
                    y_ptr as *mut c_void,
                )
            },
            "running the forward",
        )
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
    with_conv(dev, g, |p| {
        let d = &p.conv.d;
        let choice = match p.conv.input_grad {
            Some(choice) => choice,
            None => {
                const COUNT: usize =
                    sys::cudnnConvolutionBwdDataAlgo_t::CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT
                        as usize;
                // Safety: as in `forward`.
                let mut perf =
                    [unsafe { std::mem::zeroed::<sys::cudnnConvolutionBwdDataAlgoPerf_t>() };
                        COUNT];
                let mut returned = 0;
                // Safety: as in `forward`.
                check(
                    unsafe {
                        cudnn::get_convolution_backward_data_algorithm(
                            p.handle,
                            d.w.0,
                            d.y.0,
                            d.conv.0,
                            d.x.0,
                            COUNT as i32,
                            &mut returned,
                            perf.as_mut_ptr(),
                        )
                    },
                    "ranking input-gradient algorithms",
                )?;
                let ranked = perf[..(returned.max(0) as usize).min(COUNT)]
                    .iter()
                    .map(|r| Ranked {
                        algo: r.algo,
                        supported: supported(r.status),
                        math: from_sys(r.mathType),
                    });
                *p.conv
                    .input_grad
                    .insert(chosen(ranked, p.precision, "input-gradient", g)?)
            }
        };
        set_math(&d.conv, choice.math)?;
        // Safety: as in `forward`.
        let bytes = check(
            unsafe {
                cudnn::get_convolution_backward_data_workspace_size(
                    p.handle,
                    d.w.0,
                    d.y.0,
                    d.conv.0,
                    d.x.0,
                    choice.algo,
                )
            },
            "sizing the input-gradient workspace",
        )?;
        let space = workspace(p.workspace, dev, bytes)?;
        let (alpha, beta) = (1f32, 0f32);
        let (w_ptr, _w) = ptr!(w, p.stream);
        let (dy_ptr, _dy) = ptr!(dy, p.stream);
        let (dx_ptr, _dx) = DevicePtrMut::device_ptr_mut(&mut dx, p.stream);
        let (space_ptr, _space) = workspace_ptr(space, p.stream);
        // Safety: as in `forward`.
        check(
            unsafe {
                cudnn::convolution_backward_data(
                    p.handle,
                    &alpha as *const f32 as *const c_void,
                    d.w.0,
                    w_ptr as *const c_void,
                    d.y.0,
                    dy_ptr as *const c_void,
                    d.conv.0,
                    choice.algo,
                    space_ptr,
                    bytes,
                    &beta as *const f32 as *const c_void,
                    d.x.0,
                    dx_ptr as *mut c_void,
                )
            },
            "running the input gradient",
        )
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
    with_conv(dev, g, |p| {
        let d = &p.conv.d;
        let choice = match p.conv.weight_grad {
            Some(choice) => choice,
            None => {
                const COUNT: usize =
                    sys::cudnnConvolutionBwdFilterAlgo_t::CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT
                        as usize;
                // Safety: as in `forward`.
                let mut perf =
                    [unsafe { std::mem::zeroed::<sys::cudnnConvolutionBwdFilterAlgoPerf_t>() };
                        COUNT];
                let mut returned = 0;
                // Safety: as in `forward`.
                check(
                    unsafe {
                        cudnn::get_convolution_backward_filter_algorithm(
                            p.handle,
                            d.x.0,
                            d.y.0,
                            d.conv.0,
                            d.w.0,
                            COUNT as i32,
                            &mut returned,
                            perf.as_mut_ptr(),
                        )
                    },
                    "ranking weight-gradient algorithms",
                )?;
                let ranked = perf[..(returned.max(0) as usize).min(COUNT)]
                    .iter()
                    .map(|r| Ranked {
                        algo: r.algo,
                        supported: supported(r.status),
                        math: from_sys(r.mathType),
                    });
                *p.conv
                    .weight_grad
                    .insert(chosen(ranked, p.precision, "weight-gradient", g)?)
            }
        };
        set_math(&d.conv, choice.math)?;
        // Safety: as in `forward`.
        let bytes = check(
            unsafe {
                cudnn::get_convolution_backward_filter_workspace_size(
                    p.handle,
                    d.x.0,
                    d.y.0,
                    d.conv.0,
                    d.w.0,
                    choice.algo,
                )
            },
            "sizing the weight-gradient workspace",
        )?;
        let space = workspace(p.workspace, dev, bytes)?;
        let (alpha, beta) = (1f32, 0f32);
        let (x_ptr, _x) = ptr!(x, p.stream);
        let (dy_ptr, _dy) = ptr!(dy, p.stream);
        let (dw_ptr, _dw) = DevicePtrMut::device_ptr_mut(&mut dw, p.stream);
        let (space_ptr, _space) = workspace_ptr(space, p.stream);
        // Safety: as in `forward`.
        check(
            unsafe {
                cudnn::convolution_backward_filter(
                    p.handle,
                    &alpha as *const f32 as *const c_void,
                    d.x.0,
                    x_ptr as *const c_void,
                    d.y.0,
                    dy_ptr as *const c_void,
                    d.conv.0,
                    choice.algo,
                    space_ptr,
                    bytes,
                    &beta as *const f32 as *const c_void,
                    d.w.0,
                    dw_ptr as *mut c_void,
                )
            },
            "running the weight gradient",
        )
    })?;
    Ok(CudaStorage::wrap_cuda_slice(dw, dev.clone()))
}
