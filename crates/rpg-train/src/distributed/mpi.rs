//! The exchanges over MPI (rsmpi): for CPU gradients, and for start-up.
//! A watchdog ends the process when an exchange does not finish in time:
//! MPI's collectives wait forever for a rank that hangs.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Root};

use super::collective::{Collective, CollectiveError};

/// An exchange in progress: what, and since when.
type Pending = Arc<Mutex<Option<(&'static str, Instant)>>>;

/// The run's processes, as MPI's world.
pub struct Mpi {
    // Dropped last: finalises MPI.
    _universe: Universe,
    world: SimpleCommunicator,
    pending: Pending,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi(rank {} of {})", self.rank(), self.world())
    }
}

/// An exchange that has waited too long for the other ranks: one died or
/// hangs, and MPI would wait forever.
#[derive(Debug, Clone, Copy)]
pub struct Stall {
    /// This rank.
    pub rank: usize,
    /// The exchange.
    pub exchange: &'static str,
    /// How long it has waited.
    pub waited: Duration,
}

impl std::fmt::Display for Stall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rank {}: the {} exchange has waited {:.0}s for the other ranks (one died or hangs)",
            self.rank,
            self.exchange,
            self.waited.as_secs_f64()
        )
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
        let pending: Pending = Arc::new(Mutex::new(None));
        let watched = pending.clone();
        let rank = world.rank() as usize;
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(Duration::from_millis(500));
                let late = watched
                    .lock()
                    .ok()
                    .and_then(|p| *p)
                    .filter(|(_, since)| since.elapsed() > timeout);
                if let Some((exchange, since)) = late {
                    on_stall(&Stall {
                        rank,
                        exchange,
                        waited: since.elapsed(),
                    });
                }
            }
        });
        Ok(Self {
            _universe: universe,
            world,
            pending,
        })
    }

    /// Runs an exchange under the watchdog.
    fn watched<R>(&self, what: &'static str, exchange: impl FnOnce() -> R) -> R {
        if let Ok(mut p) = self.pending.lock() {
            *p = Some((what, Instant::now()));
        }
        let out = exchange();
        if let Ok(mut p) = self.pending.lock() {
            *p = None;
        }
        out
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
        self.watched("gradient", || {
            self.world
                .all_reduce_into(&send[..], values, SystemOperation::sum())
        });
        Ok(())
    }

    fn sum_f64(&self, values: &mut [f64]) -> Result<(), CollectiveError> {
        let send = values.to_vec();
        self.watched("sum", || {
            self.world
                .all_reduce_into(&send[..], values, SystemOperation::sum())
        });
        Ok(())
    }

    fn broadcast(&self, bytes: &mut Vec<u8>) -> Result<(), CollectiveError> {
        let root = self.world.process_at_rank(0);
        let mut len = bytes.len() as u64;
        self.watched("broadcast", || root.broadcast_into(&mut len));
        bytes.resize(len as usize, 0);
        self.watched("broadcast", || root.broadcast_into(&mut bytes[..]));
        Ok(())
    }
}
