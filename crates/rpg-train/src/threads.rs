//! Keeps Candle's worker threads from spinning over our kernels.
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
