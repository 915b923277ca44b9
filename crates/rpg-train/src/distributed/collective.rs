//! The exchanges between the processes of a data-parallel run.

use candle_core::{Device, Tensor};

/// A failed exchange.
#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    /// The engine (MPI) refused or failed.
    #[error("{engine} {what} failed: {message}")]
    Engine {
        /// The engine.
        engine: &'static str,
        /// The exchange.
        what: &'static str,
        /// The engine's words.
        message: String,
    },
    /// The ranks do not train the same thing.
    #[error(
        "rank {rank} of {world} {what}: start every rank with the same command, config and data"
    )]
    Mismatch {
        /// This rank.
        rank: usize,
        /// Ranks in the run.
        world: usize,
        /// What differs.
        what: String,
    },
}

/// What the processes of a run exchange. Every rank calls each method in
/// the same order; a call returns when every rank has made it.
pub trait Collective {
    /// This process's rank, 0 to `world() - 1`.
    fn rank(&self) -> usize;
    /// Processes in the run.
    fn world(&self) -> usize;
    /// Element-wise sum over the ranks, in place.
    fn sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError>;
    /// Element-wise sum over the ranks, in place.
    fn sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError>;
    /// Rank 0's `bytes`, on every rank.
    fn broadcast(&self, bytes: &mut Vec<u8>) -> Result<(), CollectiveError>;
    /// Whether this engine sums tensors on `device` there, without a
    /// copy through the host ([`sum_on_device`]): NCCL on its GPU.
    ///
    /// [`sum_on_device`]: Collective::sum_on_device
    fn sums_on(&self, device: &Device) -> bool {
        let _ = device;
        false
    }
    /// The element-wise sum over the ranks of `flat`, a rank-1 f32 tensor
    /// on a device this engine [sums on](Collective::sums_on).
    fn sum_on_device(&self, flat: &Tensor) -> Result<Tensor, CollectiveError> {
        Err(CollectiveError::Engine {
            engine: "host",
            what: "device sum",
            message: format!("this engine sums host memory, not {:?}", flat.device()),
        })
    }
    /// Whether a step exchanges its gradients even with one rank: an
    /// engine on the device path (NCCL) does, so that a one-rank run
    /// exercises and measures it.
    fn exchanges_alone(&self) -> bool {
        false
    }
}

/// One process: every exchange is the identity.
#[derive(Debug, Clone, Copy, Default)]
pub struct Solo;

impl Collective for Solo {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn sum_f32(&self, _: &mut [f32]) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn sum_f64(&self, _: &mut [f64]) -> Result<(), CollectiveError> {
        Ok(())
    }
    fn broadcast(&self, _: &mut Vec<u8>) -> Result<(), CollectiveError> {
        Ok(())
    }
}

/// Refuses to go on unless every rank's `mine` equals rank 0's: each rank
/// compares with rank 0's, then all learn whether any differed, so every
/// rank fails alike (naming what differs on the ranks where it does).
pub fn check_same(comm: &dyn Collective, what: &str, mine: &[u8]) -> Result<(), CollectiveError> {
    if comm.world() <= 1 {
        return Ok(());
    }
    let mut theirs = mine.to_vec();
    comm.broadcast(&mut theirs)?;
    let differs = theirs != mine;
    let mut any = [f64::from(u8::from(differs))];
    comm.sum_f64(&mut any)?;
    if any[0] > 0.0 {
        return Err(CollectiveError::Mismatch {
            rank: comm.rank(),
            world: comm.world(),
            what: if differs {
                format!("has another {what} than rank 0")
            } else {
                format!("has rank 0's {what}, but another rank has another configuration or data")
            },
        });
    }
    Ok(())
}
