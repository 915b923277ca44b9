//! The gradient exchange between GPUs over NCCL, device memory to device
//! memory, on the stream Candle computes on (so it is ordered after the
//! backward pass without extra waits). Everything else (the NCCL id at
//! start, configuration checks, evaluation counts) goes over the engine
//! that connected the ranks, MPI or TCP: Horovod's pattern.

use std::time::Duration;

use candle_core::backend::BackendStorage;
use candle_core::{CudaStorage, CustomOp1, Device, Layout, Shape, Tensor};
use cudarc::nccl::safe::{Comm, Id, ReduceOp};

use super::collective::{Collective, CollectiveError};
use super::watchdog::{Stall, Watchdog};

/// NCCL between the ranks' GPUs, over a control engine for the rest.
pub struct Nccl {
    control: Box<dyn Collective>,
    comm: Comm,
    device: Device,
    watchdog: Watchdog,
}

impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Nccl(rank {} of {})", self.rank(), self.world())
    }
}

fn engine(what: &'static str, message: impl Into<String>) -> CollectiveError {
    CollectiveError::Engine {
        engine: "NCCL",
        what,
        message: message.into(),
    }
}

/// The bytes of an NCCL id.
const ID_BYTES: usize = 128;

impl Nccl {
    /// Joins the ranks' GPUs: rank 0 makes the NCCL id and sends it over
    /// `control`, and every rank builds its communicator on `device`'s
    /// stream. An exchange taking longer than `timeout` hands its [`Stall`]
    /// to `on_stall`, which ends the process: NCCL waits forever for a rank
    /// that died.
    pub fn join(
        control: Box<dyn Collective>,
        device: &Device,
        timeout: Duration,
        on_stall: fn(&Stall) -> !,
    ) -> Result<Self, CollectiveError> {
        let Device::Cuda(cuda) = device else {
            return Err(engine(
                "start",
                format!(
                    "NCCL exchanges GPU memory, but this rank trains on {:?}: use a CUDA device",
                    device.location()
                ),
            ));
        };
        let (rank, world) = (control.rank(), control.world());
        let mut id = if rank == 0 {
            Id::new()
                .map_err(|e| engine("id", format!("{e:?}")))?
                .internal()
                .iter()
                .map(|&c| c as u8)
                .collect()
        } else {
            Vec::new()
        };
        control.broadcast(&mut id)?;
        let id: [std::ffi::c_char; ID_BYTES] = id
            .iter()
            .map(|&b| b as std::ffi::c_char)
            .collect::<Vec<_>>()
            .try_into()
            .map_err(|bytes: Vec<_>| {
                engine(
                    "id",
                    format!("rank 0 sent {} bytes, not {ID_BYTES}", bytes.len()),
                )
            })?;
        let watchdog = Watchdog::start(rank, timeout, on_stall);
        let comm = watchdog
            .watched("start", || {
                Comm::from_rank(cuda.cuda_stream(), rank, world, Id::uninit(id))
            })
            .map_err(|e| engine("start", format!("{e:?} (is NCCL 2.28 or newer installed?)")))?;
        Ok(Self {
            control,
            comm,
            device: device.clone(),
            watchdog,
        })
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.control.rank()
    }
    fn world(&self) -> usize {
        self.control.world()
    }
    fn sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
        self.control.sum_f32(values)
    }
    fn sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError> {
        self.control.sum_f64(values)
    }
    fn broadcast(&self, bytes: &mut Vec<u8>) -> Result<(), CollectiveError> {
        self.control.broadcast(bytes)
    }
    fn sums_on(&self, device: &Device) -> bool {
        device.location() == self.device.location()
    }
    fn sum_on_device(&self, flat: &Tensor) -> Result<Tensor, CollectiveError> {
        self.watchdog
            .watched("gradient", || flat.apply_op1_no_bwd(&AllReduce(&self.comm)))
            .map_err(|e| engine("all-reduce", e.to_string()))
    }
    fn exchanges_alone(&self) -> bool {
        true
    }
}

/// The sum over the ranks of a contiguous f32 tensor, into a new buffer.
struct AllReduce<'a>(&'a Comm);

impl CustomOp1 for AllReduce<'_> {
    fn name(&self) -> &'static str {
        "nccl_all_reduce"
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, Shape)> {
        candle_core::bail!("NCCL sums GPU tensors only")
    }

    fn cuda_fwd(&self, s: &CudaStorage, l: &Layout) -> candle_core::Result<(CudaStorage, Shape)> {
        use candle_core::cuda::WrapErr;
        let (start, end) = l
            .contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg("NCCL sums contiguous tensors only".into()))?;
        let src = s.as_cuda_slice::<f32>()?.slice(start..end);
        let dev = s.device().clone();
        let mut sum = dev.alloc_zeros::<f32>(end - start)?;
        self.0
            .all_reduce(&src, &mut sum, &ReduceOp::Sum)
            .map_err(|e| candle_core::Error::Msg(format!("ncclAllReduce: {e:?}")))?;
        // Waits here, under the watchdog, for a rank that died: the next
        // read of the loss would otherwise hang unwatched.
        self.0.stream().synchronize().w()?;
        Ok((CudaStorage::wrap_cuda_slice(sum, dev), l.shape().clone()))
    }
}
