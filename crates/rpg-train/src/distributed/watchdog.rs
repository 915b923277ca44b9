//! Ends a process whose exchange does not finish in time. MPI's and NCCL's
//! collectives wait forever for a rank that died or hangs, and a blocked
//! call cannot be returned from: a thread watches the exchange in progress
//! and hands a [`Stall`] to the binary, which reports it and exits (and the
//! launcher then ends the other ranks).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An exchange that has waited too long for the other ranks.
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

/// An exchange in progress: what, and since when.
type Pending = Arc<Mutex<Option<(&'static str, Instant)>>>;

/// Watches one rank's exchanges.
#[derive(Debug)]
pub(crate) struct Watchdog {
    pending: Pending,
}

impl Watchdog {
    /// Starts watching: an exchange of `rank` taking longer than `timeout`
    /// is handed to `on_stall`, which does not return.
    pub(crate) fn start(rank: usize, timeout: Duration, on_stall: fn(&Stall) -> !) -> Self {
        let pending: Pending = Arc::new(Mutex::new(None));
        let watched = pending.clone();
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
        Self { pending }
    }

    /// Runs `exchange` (named `what`) under watch.
    pub(crate) fn watched<R>(&self, what: &'static str, exchange: impl FnOnce() -> R) -> R {
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
