//! The CPU kernels behind the ops: plain functions over contiguous f32
//! slices (NCHW activations, OIHW weights), threaded on the rayon pool. A
//! `cuda` module with the same entry points is meant to sit beside this one.

pub(crate) mod batch_norm;
mod broadcast_product;
pub(crate) mod channels;
pub(crate) mod conv;
mod conv_gemm;
mod depthwise;
mod direct;
pub(crate) mod gemm;
pub(crate) mod geometry;
pub(crate) mod linear;
pub(crate) mod simd;
pub(crate) mod storage;
mod winograd;

/// Whether this CPU runs AVX2 and FMA, which the direct 3x3 loop needs and
/// Winograd's transforms are compiled for (checked at run time; the result
/// is cached by std).
pub(crate) fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}
