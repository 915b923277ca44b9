//! Elementwise loops compiled for the widest vectors the CPU has.
//!
//! The crate is built for baseline x86-64 (SSE2), so a plain loop over
//! slices runs 4 floats at a time even on a CPU with AVX-512. [`widest`]
//! runs a closure inside a function compiled with AVX-512 (or AVX2 and FMA)
//! enabled, chosen at run time: the closure is inlined there and vectorised
//! for that width. Rust never contracts `a * b + c` into a fused
//! multiply-add, and sums over explicit lanes keep their order, so the
//! result is the same at every width, bit for bit; only the speed differs.

/// Which vector width a loop is compiled for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Width {
    /// Baseline SSE2, any x86-64 CPU (and whatever other targets have).
    Portable,
    /// 256-bit AVX2 with FMA.
    Avx2,
    /// 512-bit AVX-512F.
    Avx512,
}

impl Width {
    /// The widest this CPU runs (detected once; std caches it).
    pub(crate) fn detected() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                return Width::Avx512;
            }
            if super::has_avx2_fma() {
                return Width::Avx2;
            }
        }
        Width::Portable
    }

    /// Every width this CPU runs, narrowest first (tests check each).
    #[cfg(test)]
    pub(crate) fn available() -> Vec<Self> {
        [Width::Portable, Width::Avx2, Width::Avx512]
            .into_iter()
            .filter(|&w| w == Width::Portable || w <= Width::detected())
            .collect()
    }
}

impl PartialOrd for Width {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        let rank = |w: &Width| match w {
            Width::Portable => 0,
            Width::Avx2 => 1,
            Width::Avx512 => 2,
        };
        rank(self).partial_cmp(&rank(other))
    }
}

/// `f()`, compiled for the widest vectors this CPU has.
#[inline(always)]
pub(crate) fn widest<R>(f: impl FnOnce() -> R) -> R {
    at_width(Width::detected(), f)
}

/// `f()` compiled for `width`, which must not exceed [`Width::detected`]
/// (it falls back to the portable code otherwise).
#[inline(always)]
pub(crate) fn at_width<R>(width: Width, f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if width > Width::detected() {
            return f();
        }
        match width {
            // SAFETY: the CPU has the features, checked just above.
            Width::Avx512 => unsafe { avx512(f) },
            Width::Avx2 => unsafe { avx2(f) },
            Width::Portable => f(),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = width;
        f()
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn avx512<R>(f: impl FnOnce() -> R) -> R {
    f()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn avx2<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// `v` where `keep`, else +0, without a branch: as a branch per lane, a
/// gate on activations' signs mispredicts about half the time.
#[inline(always)]
pub(crate) fn kept(keep: bool, v: f32) -> f32 {
    f32::from_bits(v.to_bits() & (keep as u32).wrapping_neg())
}
