//! The one way this crate calls the `gemm` crate (the products Candle's
//! matmul runs on the CPU): strided products with every addressed element
//! bounds-checked first.

use std::mem::MaybeUninit;

use gemm::{Parallelism, gemm};

/// Gemm parallelism for products that run as `tasks` tasks on the pool:
/// none when the tasks keep every thread busy, all threads otherwise (so a
/// product that runs alone, `tasks == 1`, uses the whole pool, as Candle's
/// matmul does).
pub(crate) fn product_parallelism(tasks: usize) -> Parallelism {
    if leaves_threads_idle(tasks) {
        Parallelism::Rayon(rayon::current_num_threads())
    } else {
        Parallelism::None
    }
}

/// Whether `tasks` tasks on the pool would leave a thread idle for long:
/// fewer than two per thread, on a pool of more than one.
pub(crate) fn leaves_threads_idle(tasks: usize) -> bool {
    let threads = rayon::current_num_threads();
    threads > 1 && tasks < 2 * threads
}

/// `dst[m x n] (+)= lhs[m x k] * rhs[k x n]`, each given by (column stride,
/// row stride) in elements.
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul(
    dims: (usize, usize, usize),
    dst: &mut [f32],
    dst_strides: (isize, isize),
    accumulate: bool,
    lhs: &[f32],
    lhs_strides: (isize, isize),
    rhs: &[f32],
    rhs_strides: (isize, isize),
    parallelism: Parallelism,
) {
    // SAFETY: `dst` is initialised, so reading it to accumulate is sound.
    unsafe {
        gemm_checked(
            dims,
            (dst.as_mut_ptr(), dst.len()),
            dst_strides,
            accumulate,
            (lhs, lhs_strides),
            (rhs, rhs_strides),
            parallelism,
        )
    }
}

/// [`matmul`] into memory that may be uninitialised: every element the
/// strides address is overwritten (gemm does not read `dst` when told not
/// to accumulate, its documented `read_dst = false`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn matmul_overwrite(
    dims: (usize, usize, usize),
    dst: &mut [MaybeUninit<f32>],
    dst_strides: (isize, isize),
    lhs: &[f32],
    lhs_strides: (isize, isize),
    rhs: &[f32],
    rhs_strides: (isize, isize),
    parallelism: Parallelism,
) {
    // SAFETY: no accumulation, so gemm only writes `dst`.
    unsafe {
        gemm_checked(
            dims,
            (dst.as_mut_ptr().cast(), dst.len()),
            dst_strides,
            false,
            (lhs, lhs_strides),
            (rhs, rhs_strides),
            parallelism,
        )
    }
}

/// The one call into `gemm`, after checking every addressed element lies
/// inside its buffer.
///
/// # Safety
/// `dst` is `dst.1` writable elements, exclusively borrowed and apart from
/// `lhs` and `rhs`; with `accumulate` they must be initialised.
unsafe fn gemm_checked(
    (m, n, k): (usize, usize, usize),
    dst: (*mut f32, usize),
    dst_strides: (isize, isize),
    accumulate: bool,
    (lhs, lhs_strides): (&[f32], (isize, isize)),
    (rhs, rhs_strides): (&[f32], (isize, isize)),
    parallelism: Parallelism,
) {
    let last = |(cs, rs): (isize, isize), rows: usize, cols: usize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * rs as usize + (cols - 1) * cs as usize + 1
        }
    };
    assert!(dst.1 >= last(dst_strides, m, n), "gemm dst out of bounds");
    assert!(
        lhs.len() >= last(lhs_strides, m, k),
        "gemm lhs out of bounds"
    );
    assert!(
        rhs.len() >= last(rhs_strides, k, n),
        "gemm rhs out of bounds"
    );
    // SAFETY: the asserts keep every element the strides address inside the
    // buffers; the caller vouches for dst.
    unsafe {
        gemm(
            m,
            n,
            k,
            dst.0,
            dst_strides.0,
            dst_strides.1,
            accumulate,
            lhs.as_ptr(),
            lhs_strides.0,
            lhs_strides.1,
            rhs.as_ptr(),
            rhs_strides.0,
            rhs_strides.1,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}
