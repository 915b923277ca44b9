//! Data-parallel training: one process per device, each training on its
//! shard of every batch, the gradients of the ring(s) and the unshared
//! tensors summed over processes before the update. Only those are
//! exchanged: RPG's generated weights never leave their process.
//!
//! - [`launch`]: which rank this process is, from the variables `mpirun`,
//!   MPICH, Slurm and torchrun set.
//! - [`Collective`]: the exchanges a run needs (sums, a broadcast), with
//!   [`Solo`] for one process, [`Tcp`] for processes torchrun started and,
//!   behind the `mpi` feature, `Mpi`; behind `nccl`, `Nccl` exchanges the
//!   gradients between GPUs directly, over one of those for the rest.
//!
//! What a run does with them is the trainer's: rank 0 alone writes; every
//! rank checks at start that it trains the same configuration; batch norm's
//! running statistics are averaged before each evaluation and checkpoint;
//! evaluation is sharded and its counts summed.

mod collective;
pub mod launch;
mod mean;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;
mod tcp;
#[cfg(any(feature = "mpi", feature = "nccl"))]
mod watchdog;

pub use collective::{Collective, CollectiveError, Solo, check_same};
pub use launch::Launch;
pub use mean::mean_over_ranks;
#[cfg(feature = "mpi")]
pub use mpi::Mpi;
#[cfg(feature = "nccl")]
pub use nccl::Nccl;
pub use tcp::Tcp;
#[cfg(any(feature = "mpi", feature = "nccl"))]
pub use watchdog::Stall;
