//! Where the multi-threaded kernels run their parts.

/// Runs a batch of tasks to completion, in parallel where it can. The
/// scatter-add ([`crate::Placement::accumulate_layers_on`]) cuts its work
/// into tasks and hands them to one of these, so that a caller with a
/// thread pool of its own runs them there: starting OS threads every
/// training step cost a thread stack's `mmap`, `mprotect` and `munmap`
/// each time, and with them TLB-shootdown interrupts to the other cores
/// (2-3% of a ResNet-18-cifar step in the kernel, measured 2026-12-03).
/// The tasks and their results are the same whichever runs them.
pub trait ForkJoin: Sync {
    /// Runs every task and returns once all have finished.
    fn run_all<'a>(&self, tasks: Vec<Box<dyn FnOnce() + Send + 'a>>);
}

/// A [`ForkJoin`] that starts an OS thread per task but the first, which
/// runs on the calling thread: the default, for callers without a pool.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScopedThreads;

impl ForkJoin for ScopedThreads {
    fn run_all<'a>(&self, tasks: Vec<Box<dyn FnOnce() + Send + 'a>>) {
        let mut tasks = tasks.into_iter();
        let Some(first) = tasks.next() else { return };
        std::thread::scope(|scope| {
            for task in tasks {
                scope.spawn(task);
            }
            first();
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn scoped_threads_run_every_task_once() {
        let runs = AtomicUsize::new(0);
        let tasks: Vec<Box<dyn FnOnce() + Send + '_>> = (0..5)
            .map(|i| {
                let runs = &runs;
                Box::new(move || {
                    runs.fetch_add(1 << (4 * i), Ordering::Relaxed);
                }) as Box<dyn FnOnce() + Send + '_>
            })
            .collect();
        ScopedThreads.run_all(tasks);
        assert_eq!(runs.into_inner(), 0x11111);
        ScopedThreads.run_all(Vec::new());
    }
}
