//! Which implementation the CPU f32 hot ops use: this crate's kernels or
//! Candle's stock ones.
//!
//! The choice is scoped to a thread, not the process: a test or benchmark
//! that measures Candle's path holds a [`KernelScope`], and the test harness
//! running other tests on other threads never sees it. Forward and backward
//! dispatch on the thread that calls them (Candle runs a custom op's
//! backward on the thread that calls `backward`), so a scope covers a whole
//! training step.

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

/// The implementation behind [`crate::ops::conv2d`], [`crate::BatchNorm`]
/// and the other ops of this crate for f32 tensors on the CPU (other devices
/// always use Candle's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum KernelBackend {
    /// This crate's kernels (the default).
    #[default]
    Native,
    /// Candle's stock conv and candle-nn's batch norm.
    Candle,
}

impl KernelBackend {
    /// Every backend, in the order benchmarks run them.
    pub const ALL: [KernelBackend; 2] = [KernelBackend::Native, KernelBackend::Candle];

    /// The flag spelling: `native` or `candle`.
    pub fn name(self) -> &'static str {
        match self {
            KernelBackend::Native => "native",
            KernelBackend::Candle => "candle",
        }
    }

    /// Makes this the choice of the current thread until the returned scope
    /// is dropped; the previous choice comes back then.
    #[must_use = "the choice lasts only as long as the scope is held"]
    pub fn scope(self) -> KernelScope {
        KernelScope {
            previous: CURRENT.replace(self),
        }
    }
}

impl fmt::Display for KernelBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown backend name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown kernel backend `{0}`: expected native or candle")]
pub struct UnknownKernelBackend(pub String);

impl FromStr for KernelBackend {
    type Err = UnknownKernelBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| UnknownKernelBackend(s.to_string()))
    }
}

thread_local! {
    static CURRENT: Cell<KernelBackend> = const { Cell::new(KernelBackend::Native) };
}

/// A thread's kernel choice while it is held; see [`KernelBackend::scope`].
#[derive(Debug)]
pub struct KernelScope {
    previous: KernelBackend,
}

impl Drop for KernelScope {
    fn drop(&mut self) {
        CURRENT.set(self.previous);
    }
}

/// The current thread's kernel choice.
pub fn kernel_backend() -> KernelBackend {
    CURRENT.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_restores_the_previous_choice_and_stays_on_its_thread() {
        assert_eq!(kernel_backend(), KernelBackend::Native);
        {
            let _outer = KernelBackend::Candle.scope();
            assert_eq!(kernel_backend(), KernelBackend::Candle);
            std::thread::spawn(|| assert_eq!(kernel_backend(), KernelBackend::Native))
                .join()
                .unwrap();
            {
                let _inner = KernelBackend::Native.scope();
                assert_eq!(kernel_backend(), KernelBackend::Native);
            }
            assert_eq!(kernel_backend(), KernelBackend::Candle);
        }
        assert_eq!(kernel_backend(), KernelBackend::Native);
    }

    #[test]
    fn names_round_trip() {
        for b in KernelBackend::ALL {
            assert_eq!(b.name().parse::<KernelBackend>(), Ok(b));
        }
        assert!("cudnn".parse::<KernelBackend>().is_err());
    }
}
