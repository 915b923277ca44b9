//! Eight channels at once: the [`Lanes`] value the transforms compute on,
//! and the 8x8 transposes that interleave channel planes into it and back.

use super::*;

/// Eight channels' values at one position, one per lane: the transforms
/// are the same adds and scalings on every lane, which LLVM turns into
/// vector instructions.
#[derive(Clone, Copy, Default)]
pub(super) struct Lanes(pub(super) [f32; LANES]);

/// Lane-wise `+`, `-` and `* scalar` for a value of lanes: the same adds
/// and scalings on every lane, which LLVM turns into vector instructions.
macro_rules! lane_arithmetic {
    ($t:ty) => {
        impl std::ops::Add for $t {
            type Output = Self;
            #[inline(always)]
            fn add(self, o: Self) -> Self {
                let mut sum = self;
                for (a, b) in sum.0.iter_mut().zip(o.0) {
                    *a += b;
                }
                sum
            }
        }

        impl std::ops::Sub for $t {
            type Output = Self;
            #[inline(always)]
            fn sub(self, o: Self) -> Self {
                let mut difference = self;
                for (a, b) in difference.0.iter_mut().zip(o.0) {
                    *a -= b;
                }
                difference
            }
        }

        impl std::ops::Mul<f32> for $t {
            type Output = Self;
            #[inline(always)]
            fn mul(self, s: f32) -> Self {
                let mut product = self;
                for v in product.0.iter_mut() {
                    *v *= s;
                }
                product
            }
        }
    };
}

lane_arithmetic!(Lanes);

impl Lanes {
    /// The first [`LANES`] values of `run`.
    #[inline(always)]
    pub(super) fn load(run: &[f32]) -> Self {
        let mut lanes = Self::default();
        lanes.0.copy_from_slice(&run[..LANES]);
        lanes
    }
}

/// Two channel blocks at one position (16 lanes): on AVX-512 one vector
/// does the transforms' arithmetic for both, lane by lane the same
/// operations as two [`Lanes`], so the same bits.
#[derive(Clone, Copy)]
pub(super) struct Wide(pub(super) [f32; 2 * LANES]);

impl Default for Wide {
    fn default() -> Self {
        Self([0.0; 2 * LANES])
    }
}

lane_arithmetic!(Wide);

impl Value for Wide {}

/// The unit of channels a transform computes on: one block of [`LANES`]
/// ([`Lanes`], AVX2) or two ([`Wide`], AVX-512). Staged images hold one
/// plane of [`Lanes`] per block, so a unit of two blocks is gathered from
/// two planes and scattered back to them; the transformed rows hold
/// channels contiguously, so it is read and written as one run.
pub(super) trait Block: Value + Default {
    /// Channel blocks per value.
    const BLOCKS: usize;
    /// The values at `at` of this block's plane and the next ones, each
    /// `plane` further.
    fn gather(staged: &[Lanes], at: usize, plane: usize) -> Self;
    /// Writes the values where [`Block::gather`] reads them.
    fn scatter(self, staged: &mut [Lanes], at: usize, plane: usize);
    /// The first `BLOCKS * LANES` values of `run`.
    fn read_run(run: &[f32]) -> Self;
    /// Writes the first `BLOCKS * LANES` values of `run`.
    fn write_run(self, run: &mut [f32]);
}

impl Block for Lanes {
    const BLOCKS: usize = 1;
    #[inline(always)]
    fn gather(staged: &[Lanes], at: usize, _: usize) -> Self {
        staged[at]
    }
    #[inline(always)]
    fn scatter(self, staged: &mut [Lanes], at: usize, _: usize) {
        staged[at] = self;
    }
    #[inline(always)]
    fn read_run(run: &[f32]) -> Self {
        Lanes::load(run)
    }
    #[inline(always)]
    fn write_run(self, run: &mut [f32]) {
        run[..LANES].copy_from_slice(&self.0);
    }
}

impl Block for Wide {
    const BLOCKS: usize = 2;
    #[inline(always)]
    fn gather(staged: &[Lanes], at: usize, plane: usize) -> Self {
        let mut wide = Wide::default();
        wide.0[..LANES].copy_from_slice(&staged[at].0);
        wide.0[LANES..].copy_from_slice(&staged[at + plane].0);
        wide
    }
    #[inline(always)]
    fn scatter(self, staged: &mut [Lanes], at: usize, plane: usize) {
        staged[at].0.copy_from_slice(&self.0[..LANES]);
        staged[at + plane].0.copy_from_slice(&self.0[LANES..]);
    }
    #[inline(always)]
    fn read_run(run: &[f32]) -> Self {
        let mut wide = Wide::default();
        wide.0.copy_from_slice(&run[..2 * LANES]);
        wide
    }
    #[inline(always)]
    fn write_run(self, run: &mut [f32]) {
        run[..2 * LANES].copy_from_slice(&self.0);
    }
}

/// Whether the transforms of `channels` channels take [`Wide`] values: the
/// CPU has AVX-512F and the channels are whole pairs of blocks.
pub(super) fn wide_applies(channels: usize) -> bool {
    channels.is_multiple_of(2 * LANES) && Width::detected() == Width::Avx512
}

/// A thread's kept buffer of [`Lanes`], for the transforms' staged images:
/// a fresh zeroed vector per image was an allocation and a memset pass per
/// call. Taken out and put back rather than lent to a closure, so that
/// nothing of the transform leaves the AVX2 function it is compiled into.
pub(super) type KeptLanes = std::thread::LocalKey<std::cell::Cell<Staging>>;

/// A kept buffer of [`Lanes`] and the layout whose borders it holds zeros
/// in, if any.
#[derive(Default)]
pub(super) struct Staging {
    pub(super) lanes: Vec<Lanes>,
    zeroed: Option<Bordered>,
}

/// Planes of `pitch`-wide rows, each `plane` long, whose pixels outside
/// the `size` window at `origin` are zero.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Bordered {
    planes: usize,
    plane: usize,
    pitch: usize,
    origin: (usize, usize),
    size: (usize, usize),
}

impl Staging {
    /// Zeroes every pixel outside the `size` window at `origin` of the
    /// first `planes` planes of `plane` pixels (rows `pitch` wide): the
    /// border a staged image needs around the values an [`interleave`]
    /// writes. Nothing else writes there, so a buffer last bordered for the
    /// same layout is left as it is (it was zeroed per image: two short
    /// fills per row of every channel block).
    #[inline(always)]
    pub(super) fn zero_borders(
        &mut self,
        planes: usize,
        plane: usize,
        pitch: usize,
        origin: (usize, usize),
        size: (usize, usize),
    ) {
        let wanted = Bordered {
            planes,
            plane,
            pitch,
            origin,
            size,
        };
        if self
            .zeroed
            .is_some_and(|z| z.planes >= planes && Bordered { planes, ..z } == wanted)
        {
            return;
        }
        for block_plane in self.lanes.chunks_exact_mut(plane).take(planes) {
            zero_outside(block_plane, pitch, origin, size);
        }
        self.zeroed = Some(wanted);
    }
}

/// `kept`'s buffer, at least `len` long (contents unspecified beyond the
/// borders [`Staging::zero_borders`] keeps; a thread that re-enters finds
/// it empty and allocates). Give it back with `kept.set`.
#[inline(always)]
pub(super) fn take_lanes(kept: &'static KeptLanes, len: usize) -> Staging {
    let mut staging = kept.take();
    if staging.lanes.len() < len {
        // Simplest to border the grown buffer afresh.
        staging.zeroed = None;
        staging.lanes.resize(len, Lanes::default());
    }
    staging
}

/// Zeroes every pixel of a `pitch`-wide plane outside the `h x w` window
/// whose first pixel is at `(top, left)`.
#[inline(always)]
fn zero_outside(
    plane: &mut [Lanes],
    pitch: usize,
    (top, left): (usize, usize),
    (h, w): (usize, usize),
) {
    let zero = Lanes::default();
    plane[..top * pitch].fill(zero);
    plane[(top + h) * pitch..].fill(zero);
    for row in plane[top * pitch..(top + h) * pitch].chunks_exact_mut(pitch) {
        row[..left].fill(zero);
        row[left + w..].fill(zero);
    }
}

/// Column `j` of a small row-major matrix. A loop rather than
/// `std::array::from_fn`, whose closures are not always inlined into the
/// AVX2 callers and then run without AVX2.
#[inline(always)]
pub(super) fn column<T: Copy, const R: usize, const C: usize>(
    rows: &[[T; C]; R],
    j: usize,
) -> [T; R] {
    let mut out = [rows[0][j]; R];
    for (o, row) in out.iter_mut().zip(rows) {
        *o = row[j];
    }
    out
}

/// Writes `f(0), .., f(N - 1)` into `slots` and returns them as an array,
/// in place: an array first filled with defaults and then overwritten
/// was, for the transforms' 6x6 tiles of [`Wide`] values (2.3 KB), a
/// `memset` call per tile and channel pair that LLVM kept (6% of a
/// ResNet-18-cifar step), and one returned by value a `memcpy` call. `f`
/// should be an `#[inline(always)]` closure, for the reason [`column`]
/// gives.
#[inline(always)]
pub(super) fn fill<T, const N: usize>(
    slots: &mut [std::mem::MaybeUninit<T>; N],
    mut f: impl FnMut(usize) -> T,
) -> &[T; N] {
    for (i, slot) in slots.iter_mut().enumerate() {
        slot.write(f(i));
    }
    // SAFETY: every slot was written above, and `[MaybeUninit<T>; N]` has
    // the layout of `[T; N]`.
    unsafe { &*std::ptr::from_ref(slots).cast::<[T; N]>() }
}

/// The first stage of a tile transform: column `col` of the tile is
/// `element(col, 0..IN)`, and each is mapped by `transform`, into `slots`
/// ([`fill`], twice: nothing is filled with defaults first). `element`
/// should be an `#[inline(always)]` closure.
#[inline(always)]
pub(super) fn transformed_columns<T: Copy, const IN: usize, const OUT: usize, const N: usize>(
    slots: &mut [std::mem::MaybeUninit<[T; OUT]>; N],
    element: impl Fn(usize, usize) -> T,
    transform: impl Fn([T; IN]) -> [T; OUT],
) -> &[[T; OUT]; N] {
    fill(
        slots,
        #[inline(always)]
        |col| {
            let mut column = [std::mem::MaybeUninit::uninit(); IN];
            transform(*fill(
                &mut column,
                #[inline(always)]
                |row| element(col, row),
            ))
        },
    )
}

/// What the transforms need of a value: `f32` for the kernel, [`Lanes`]
/// for the data.
pub(super) trait Value:
    Copy
    + std::ops::Add<Output = Self>
    + std::ops::Sub<Output = Self>
    + std::ops::Mul<f32, Output = Self>
{
}
impl Value for f32 {}
impl Value for Lanes {}

/// Copies eight channel planes (`planes`, `8 x h x w`) into `dst` as
/// 8-channel pixels, row `r` at `dst[r * pitch..][..w]`: eight pixels at a
/// time through an 8x8 transpose, taken along the planes as one run so
/// that maps narrower than eight (4x4) transpose too.
#[inline(always)]
pub(super) fn interleave<X: Transpose>(
    planes: &[f32],
    (h, w): (usize, usize),
    dst: &mut [Lanes],
    pitch: usize,
) {
    let total = h * w;
    let whole = total / LANES * LANES;
    // The next pixel's place in `dst`, row by row.
    let (mut r, mut x) = (0, 0);
    let mut place = || {
        let at = r * pitch + x;
        x += 1;
        if x == w {
            (r, x) = (r + 1, 0);
        }
        at
    };
    for p in (0..whole).step_by(LANES) {
        let mut block = [[0f32; LANES]; LANES];
        for (l, lane_run) in block.iter_mut().enumerate() {
            lane_run.copy_from_slice(&planes[l * total + p..][..LANES]);
        }
        for values in X::transpose(block) {
            dst[place()].0 = values;
        }
    }
    for p in whole..total {
        let pixel = &mut dst[place()];
        for (l, value) in pixel.0.iter_mut().enumerate() {
            *value = planes[l * total + p];
        }
    }
}

/// The inverse of [`interleave`] without a pitch: 8-channel pixels `src`
/// (`h * w` of them) into eight channel planes.
#[inline(always)]
pub(super) fn deinterleave<X: Transpose>(
    src: &[Lanes],
    (h, w): (usize, usize),
    planes: &mut [MaybeUninit<f32>],
) {
    let total = h * w;
    let whole = total / LANES * LANES;
    for p in (0..whole).step_by(LANES) {
        let mut block = [[0f32; LANES]; LANES];
        for (values, pixel) in block.iter_mut().zip(&src[p..p + LANES]) {
            *values = pixel.0;
        }
        for (l, values) in X::transpose(block).into_iter().enumerate() {
            for (o, v) in planes[l * total + p..][..LANES].iter_mut().zip(values) {
                o.write(v);
            }
        }
    }
    for (p, pixel) in src[..total].iter().enumerate().skip(whole) {
        for (l, v) in pixel.0.into_iter().enumerate() {
            planes[l * total + p].write(v);
        }
    }
}

/// An 8x8 transpose, `out[i][j] = m[j][i]`: how eight channels' runs of
/// eight pixels become eight pixels of eight channels and back.
pub(super) trait Transpose {
    fn transpose(m: [[f32; LANES]; LANES]) -> [[f32; LANES]; LANES];
}

/// [`Transpose`] element by element.
pub(super) struct PlainTranspose;

impl Transpose for PlainTranspose {
    #[inline(always)]
    fn transpose(m: [[f32; LANES]; LANES]) -> [[f32; LANES]; LANES] {
        let mut out = m;
        for (i, row) in out.iter_mut().enumerate() {
            for (j, value) in row.iter_mut().enumerate() {
                *value = m[j][i];
            }
        }
        out
    }
}

/// [`Transpose`] in AVX registers: 24 shuffles for 64 values. Only used
/// inside the AVX2-compiled transforms, which run where AVX2 was detected.
#[cfg(target_arch = "x86_64")]
pub(super) struct Avx2Transpose;

#[cfg(target_arch = "x86_64")]
impl Transpose for Avx2Transpose {
    #[inline(always)]
    fn transpose(m: [[f32; LANES]; LANES]) -> [[f32; LANES]; LANES] {
        // SAFETY: this impl is only instantiated by the `*_avx2` transforms,
        // which are called only where AVX2 was detected.
        unsafe { transpose_avx2(m) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn transpose_avx2(m: [[f32; LANES]; LANES]) -> [[f32; LANES]; LANES] {
    use std::arch::x86_64::*;
    // SAFETY: each row is 8 floats, the width of one unaligned load/store.
    unsafe {
        let r: [__m256; LANES] = std::array::from_fn(|i| _mm256_loadu_ps(m[i].as_ptr()));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let rows = [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ];
        let mut out = [[0f32; LANES]; LANES];
        for (o, row) in out.iter_mut().zip(rows) {
            _mm256_storeu_ps(o.as_mut_ptr(), row);
        }
        out
    }
}
