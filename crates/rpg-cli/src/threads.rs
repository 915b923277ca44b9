//! Keeps Candle's worker threads from spinning over our kernels, and its
//! thread count from being recomputed on every matrix product.
//!
//! Candle's CPU elementwise ops run on a barrier pool of its own (one worker
//! per core but the caller's), whose workers spin 25,000 times after every op
//! before they park. The conv, batch-norm and activation kernels run on
//! rayon's pool, so between two Candle ops a spinning worker takes a core
//! from them: 11% of a ResNet-20 step's CPU samples were that spin. A short
//! spin keeps the wake-up cheap for back-to-back Candle ops and gives the core
//! back otherwise. ResNet-20 b128 dense training on the 2-core machine
//! (`rpg bench --model resnet20 --one dense`, alternating settings):
//! median 423 images/s over 6 runs at Candle's 25,000 spins (359-469),
//! 474 over 10 runs at 1,000 (432-496); 1 spin was slower again (454-480).

/// Candle reads this once, when its pool starts.
const SPIN_LIMIT_VAR: &str = "CANDLE_BARRIER_POOL_SPIN_LIMIT";
const SPIN_LIMIT: &str = "1000";

/// Sets Candle's worker spin limit unless the user set one; call first
/// thing in `main`, before any thread exists.
pub fn shorten_candle_worker_spin() {
    if std::env::var_os(SPIN_LIMIT_VAR).is_none() {
        // SAFETY: called at the start of main, before any other thread
        // exists, so nothing reads the environment concurrently.
        unsafe { std::env::set_var(SPIN_LIMIT_VAR, SPIN_LIMIT) };
    }
}

/// Rayon's and Candle's shared setting of the thread count.
const RAYON_THREADS_VAR: &str = "RAYON_NUM_THREADS";

/// Fixes Candle's thread count once, at start-up, to what it would be anyway.
///
/// Candle asks for its thread count on every CPU matrix product, and
/// unless `RAYON_NUM_THREADS` is set it recomputes it from the process's
/// CPU mask and `/proc/cpuinfo` each time: a dozen file reads per MLP step,
/// 4% of its time. Setting the variable to the value Candle computes makes
/// each ask an environment lookup. Rayon's pool reads the same variable, so
/// it is set only where both would choose the same count anyway (Candle
/// counts physical cores, rayon logical CPUs), and never over the user's.
/// Call first thing in `main`, before any thread exists.
pub fn pin_thread_counts() {
    if std::env::var_os(RAYON_THREADS_VAR).is_some() {
        return;
    }
    let candle = candle_core::utils::get_num_threads();
    let rayon = std::thread::available_parallelism().map_or(1, |n| n.get());
    if candle == rayon {
        // SAFETY: called at the start of main, before any other thread
        // exists, so nothing reads the environment concurrently.
        unsafe { std::env::set_var(RAYON_THREADS_VAR, candle.to_string()) };
    }
}

/// Stack of each rayon worker: the whole command runs on one (see
/// [`in_worker_pool`]), and Candle's backward walks the graph recursively,
/// as deep as the model; the main thread's 8 MiB, the rest only reserved.
const WORKER_STACK: usize = 64 << 20;

/// Runs `f` (the whole command) on a thread of rayon's pool.
///
/// The kernels fork and join on rayon's pool. Called from the main thread,
/// every parallel kernel hands its work to the pool and puts the main thread
/// to sleep until the workers wake it: two context switches per op, and
/// three threads on what is often two cores. From a worker, the caller
/// takes part in its own fork-join and only the other workers are woken.
/// MLP b128 training on the 2-core machine spent about a quarter of its
/// samples in the kernel's scheduler before.
pub fn in_worker_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    // An error means a pool exists already (a second call): use it.
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(WORKER_STACK)
        .build_global();
    rayon::scope(|_| f())
}
