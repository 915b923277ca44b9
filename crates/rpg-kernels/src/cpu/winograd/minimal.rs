//! The two minimal filterings, F(4x4, 3x3) and F(2x2, 3x3): their
//! transform matrices as [`Minimal`] implementations.

use super::*;

/// F(4x4, 3x3): 36 products per 16 outputs; maps of [`MIN_PIXELS_4X4`]
/// or more.
pub(super) struct F4x4;

impl Minimal<4, 6> for F4x4 {
    #[inline(always)]
    fn b_t<T: Value>(d: [T; 6]) -> [T; 6] {
        [
            d[0] * 4.0 - d[2] * 5.0 + d[4],
            d[3] + d[4] - (d[1] + d[2]) * 4.0,
            d[4] - d[3] + (d[1] - d[2]) * 4.0,
            d[4] - d[2] + (d[3] - d[1]) * 2.0,
            d[4] - d[2] + (d[1] - d[3]) * 2.0,
            d[1] * 4.0 - d[3] * 5.0 + d[5],
        ]
    }

    #[inline(always)]
    fn a_t<T: Value>(m: [T; 6]) -> [T; 4] {
        let (s12, d12) = (m[1] + m[2], m[1] - m[2]);
        let (s34, d34) = (m[3] + m[4], m[3] - m[4]);
        [
            m[0] + s12 + s34,
            d12 + d34 * 2.0,
            s12 + s34 * 4.0,
            d12 + d34 * 8.0 + m[5],
        ]
    }

    #[inline(always)]
    fn g_times<T: Value>(p: T, q: T, r: T) -> [T; 6] {
        let (a, b) = (p + r, q);
        [
            p * 0.25,
            (a + b) * (-1.0 / 6.0),
            (a - b) * (-1.0 / 6.0),
            p * (1.0 / 24.0) + q * (1.0 / 12.0) + r * (1.0 / 6.0),
            p * (1.0 / 24.0) - q * (1.0 / 12.0) + r * (1.0 / 6.0),
            r,
        ]
    }

    #[inline(always)]
    fn a_times<T: Value>(d: [T; 4]) -> [T; 6] {
        let (s02, s13) = (d[0] + d[2], d[1] + d[3]);
        let (q02, q13) = (d[0] + d[2] * 4.0, d[1] * 2.0 + d[3] * 8.0);
        [d[0], s02 + s13, s02 - s13, q02 + q13, q02 - q13, d[3]]
    }

    #[inline(always)]
    fn g_t<T: Value>(u: [T; 6]) -> [T; 3] {
        let (s12, d12) = (u[1] + u[2], u[2] - u[1]);
        let (s34, d34) = (u[3] + u[4], u[3] - u[4]);
        [
            u[0] * 0.25 - s12 * (1.0 / 6.0) + s34 * (1.0 / 24.0),
            d12 * (1.0 / 6.0) + d34 * (1.0 / 12.0),
            u[5] + (s34 - s12) * (1.0 / 6.0),
        ]
    }
}

/// F(2x2, 3x3): 16 products per 4 outputs; its transformed kernel is 16/9
/// of the kernel where F(4x4)'s is 4 times, which is what decides small
/// maps.
pub(super) struct F2x2;

impl Minimal<2, 4> for F2x2 {
    #[inline(always)]
    fn b_t<T: Value>(d: [T; 4]) -> [T; 4] {
        [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]
    }

    #[inline(always)]
    fn a_t<T: Value>(m: [T; 4]) -> [T; 2] {
        [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]
    }

    #[inline(always)]
    fn g_times<T: Value>(p: T, q: T, r: T) -> [T; 4] {
        [p, (p + q + r) * 0.5, (p - q + r) * 0.5, r]
    }

    #[inline(always)]
    fn a_times<T: Value>(d: [T; 2]) -> [T; 4] {
        [d[0], d[0] + d[1], d[0] - d[1], d[1] * -1.0]
    }

    #[inline(always)]
    fn g_t<T: Value>(u: [T; 4]) -> [T; 3] {
        let s12 = (u[1] + u[2]) * 0.5;
        [u[0] + s12, (u[1] - u[2]) * 0.5, s12 + u[3]]
    }
}
