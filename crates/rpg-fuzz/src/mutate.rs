//! Byte-level mutations of a valid input: bit flips, interesting values,
//! huge length fields, truncation, insertion and duplication.

/// xorshift64*: small, fast, and deterministic for a seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`; the bias is irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Values that break arithmetic and size checks.
const INTERESTING_U64: [u64; 8] = [
    0,
    1,
    0x7f,
    0xffff_ffff,
    1 << 31,
    1 << 60,
    u64::MAX,
    u64::MAX / 2,
];

/// `input` with 1 to 4 random mutations.
pub fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        if out.is_empty() {
            out.push(rng.next() as u8);
            continue;
        }
        let at = rng.below(out.len());
        match rng.below(7) {
            0 => out[at] ^= 1 << rng.below(8),
            1 => out[at] = [0u8, 0xff, 0x7f, 0x80, b'"', b'9', b'-'][rng.below(7)],
            2 => {
                // A little-endian length (safetensors' header size).
                let v = INTERESTING_U64[rng.below(INTERESTING_U64.len())].to_le_bytes();
                let end = (at + 8).min(out.len());
                out[at..end].copy_from_slice(&v[..end - at]);
            }
            3 => {
                // A big-endian dimension (IDX headers).
                let v = (INTERESTING_U64[rng.below(INTERESTING_U64.len())] as u32).to_be_bytes();
                let end = (at + 4).min(out.len());
                out[at..end].copy_from_slice(&v[..end - at]);
            }
            4 => out.truncate(at),
            5 => {
                let n = 1 + rng.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                out.splice(at..at, bytes);
            }
            _ => {
                let len = 1 + rng.below((out.len() - at).min(64));
                let chunk = out[at..at + len].to_vec();
                let to = rng.below(out.len());
                out.splice(to..to, chunk);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mutations_are_deterministic_and_change_the_input() {
        let input = vec![7u8; 100];
        let a = mutate(&input, &mut Rng::new(3));
        let b = mutate(&input, &mut Rng::new(3));
        assert_eq!(a, b);
        let changed = (0..50).filter(|s| mutate(&input, &mut Rng::new(*s)) != input);
        assert!(changed.count() > 40);
    }
}
