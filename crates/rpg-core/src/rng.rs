//! The frozen pseudo-random generator behind every placement.
//!
//! Placement must be a pure function of (spec, registry, seed) forever, so
//! `rpg-core` owns its generator instead of borrowing one whose output may
//! change between crate versions. The algorithms are the published ones:
//!
//! * [`SplitMix64`] (Steele, Lea, Flood 2014) turns a user seed into
//!   well-mixed 64-bit words;
//! * [`Pcg32`] is PCG-XSH-RR 64/32 (O'Neill 2014) with the reference
//!   `pcg32_srandom_r` seeding;
//! * [`Pcg32::below`] draws a bounded `u32` by rejection (the OpenBSD
//!   `arc4random_uniform` method), never through `usize` or floats.
//!
//! `docs/format.md` specifies all three precisely; golden vectors lock them.

/// SplitMix64: a 64-bit counter passed through a fixed mixing function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose first output mixes `seed + 0x9e3779b97f4a7c15`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64-bit word.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

const PCG_MULTIPLIER: u64 = 6_364_136_223_846_793_005;

/// PCG-XSH-RR with 64-bit state and 32-bit output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pcg32 {
    state: u64,
    increment: u64,
}

impl Pcg32 {
    /// Reference seeding (`pcg32_srandom_r(initstate, initseq)`).
    pub fn new(init_state: u64, init_sequence: u64) -> Self {
        let mut rng = Self {
            state: 0,
            increment: (init_sequence << 1) | 1,
        };
        rng.next_u32();
        rng.state = rng.state.wrapping_add(init_state);
        rng.next_u32();
        rng
    }

    /// The generator for one purpose of one ring group, derived from a user
    /// seed: `init_state` is the first SplitMix64 word of `seed`,
    /// `init_sequence` is `(purpose << 32) | group`.
    pub fn for_stream(seed: u64, purpose: StreamPurpose, group: u32) -> Self {
        let init_state = SplitMix64::new(seed).next_u64();
        let init_sequence = ((purpose as u64) << 32) | u64::from(group);
        Self::new(init_state, init_sequence)
    }

    /// Restores a generator from [`Pcg32::to_state`].
    pub fn from_state(state: [u64; 2]) -> Self {
        Self {
            state: state[0],
            increment: state[1] | 1,
        }
    }

    /// The full state (state word, increment), for checkpointing.
    pub fn to_state(&self) -> [u64; 2] {
        [self.state, self.increment]
    }

    /// The next 32-bit word.
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old
            .wrapping_mul(PCG_MULTIPLIER)
            .wrapping_add(self.increment);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        let rot = (old >> 59) as u32;
        xorshifted.rotate_right(rot)
    }

    /// A uniform integer in `0..bound` by rejection sampling: words below
    /// `(2^32 - bound) mod bound` are discarded so every residue is equally
    /// likely. `bound` must be non-zero.
    pub fn below(&mut self, bound: u32) -> u32 {
        debug_assert!(bound > 0, "bound must be positive");
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let word = self.next_u32();
            if word >= threshold {
                return word % bound;
            }
        }
    }

    /// A uniform float in `[0, 1)` with 24 random bits (exact in f32).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u32() >> 8) as f32 * (1.0 / 16_777_216.0)
    }

    /// A standard normal sample (Box-Muller on two 24-bit uniforms). Used
    /// for ring initialisation, where bit-stability is a convenience, not a
    /// format guarantee.
    pub fn next_normal(&mut self) -> f32 {
        let u1 = (self.next_f32() as f64 + 1.0 / 33_554_432.0).min(1.0);
        let u2 = self.next_f32() as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// In-place Fisher-Yates shuffle: for `i` from `len-1` down to 1, swap
    /// element `i` with element `below(i + 1)`. `values.len()` must fit `u32`.
    pub fn shuffle<T>(&mut self, values: &mut [T]) {
        for i in (1..values.len()).rev() {
            let j = self.below(i as u32 + 1) as usize;
            values.swap(i, j);
        }
    }
}

/// What a generator stream is used for; part of its sequence number, so the
/// streams are independent and adding a purpose never shifts another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum StreamPurpose {
    /// Drawing the remainder indices and shuffling the stream (paper), or
    /// drawing indices with replacement (hashed).
    Indices = 1,
    /// Sign flips.
    Signs = 2,
    /// Initial ring values.
    RingInit = 3,
    /// Training-data order and augmentation.
    Data = 4,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_reference_vector() {
        // Reference outputs of splitmix64.c for seed 0.
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(rng.next_u64(), 0x6e78_9e6a_a1b9_65f4);
        assert_eq!(rng.next_u64(), 0x06c4_5d18_8009_454f);
    }

    #[test]
    fn pcg32_matches_reference_demo() {
        // pcg32-demo.c: pcg32_srandom_r(&rng, 42u, 54u), first six outputs.
        let mut rng = Pcg32::new(42, 54);
        let expected = [
            0xa15c_02b7,
            0x7b47_f409,
            0xba1d_3330,
            0x83d2_f293,
            0xbfa4_784b,
            0xcbed_606e,
        ];
        for want in expected {
            assert_eq!(rng.next_u32(), want);
        }
    }

    #[test]
    fn below_stays_in_range_and_covers_it() {
        let mut rng = Pcg32::new(1, 2);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let v = rng.below(7);
            assert!(v < 7);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(rng.below(1), 0);
    }

    #[test]
    fn state_round_trips() {
        let mut a = Pcg32::for_stream(9, StreamPurpose::Data, 0);
        a.next_u32();
        let mut b = Pcg32::from_state(a.to_state());
        assert_eq!(a.next_u32(), b.next_u32());
    }

    #[test]
    fn normal_has_unit_moments() {
        let mut rng = Pcg32::new(3, 4);
        let n = 20_000;
        let xs: Vec<f64> = (0..n).map(|_| rng.next_normal() as f64).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((var - 1.0).abs() < 0.05, "var {var}");
    }
}
