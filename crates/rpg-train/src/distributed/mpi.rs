//! The exchanges over MPI (rsmpi): for CPU gradients, and for start-up.
//! A [`Watchdog`] ends the process when an exchange does not finish in
//! time: MPI's collectives wait forever for a rank that hangs.

use std::time::Duration;

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

use super::collective::{Collective, CollectiveError};
use super::watchdog::{Stall, Watchdog};

/// The run's processes, as MPI's world.
pub struct Mpi {
    // Dropped last: finalises MPI.
    _universe: Universe,
    world: SimpleCommunicator,
    watchdog: Watchdog,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi(rank {} of {})", self.rank(), self.world())
    }
}

impl Mpi {
    /// Joins the run; an exchange taking longer than `timeout` hands its
    /// [`Stall`] to `on_stall`, which ends the process (and so, through
    /// the launcher, the run): a blocked MPI call cannot be returned from.
    pub fn init(timeout: Duration, on_stall: fn(&Stall) -> !) -> Result<Self, CollectiveError> {
        let universe = mpi::initialize().ok_or_else(|| CollectiveError::Engine {
            engine: "MPI",
            what: "initialisation",
            message: "MPI was initialised already".into(),
        })?;
        let world = universe.world();
        let watchdog = Watchdog::start(world.rank() as usize, timeout, on_stall);
        Ok(Self {
            _universe: universe,
            world,
            watchdog,
        })
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn world(&self) -> usize {
        self.world.size() as usize
    }

    fn sum_f32(&self, values: &mut [f32]) -> Result<(), CollectiveError> {
        let send = values.to_vec();
        self.watchdog.watched("gradient", || {
            self.world
                .all_reduce_into(&send[..], values, SystemOperation::sum())
        });
        Ok(())
    }

    fn sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError> {
        let send = values.to_vec();
        self.watchdog.watched("sum", || {
            self.world
                .all_reduce_into(&send[..], values, SystemOperation::sum())
        });
        Ok(())
    }

    fn broadcast(&self, bytes: &mut Vec<u8>) -> Result<(), CollectiveError> {
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        self.watchdog
            .watched("broadcast", || root.broadcast_into(&mut len));
        bytes.resize(len as usize, 0);
        self.watchdog
            .watched("broadcast", || root.broadcast_into(&mut bytes[..]));
        Ok(())
    }
}
