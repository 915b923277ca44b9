//! Symmetric block quantization to 8 or 4 bits.
//!
//! Each block of `block` values gets one scale `s = max|x| / q_max`
//! (`q_max` = 127 or 7) and codes `round(x / s)` in `[-q_max, q_max]`, so
//! the reconstruction error of every value is at most `s / 2`. Candle has no
//! I8 dtype: 8-bit codes are stored as `u8` with an offset of 128, 4-bit
//! codes as two per byte with an offset of 8 (low nibble first).

/// Bits per code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bits {
    /// 8-bit codes.
    Eight,
    /// 4-bit codes, two per byte.
    Four,
}

impl Bits {
    /// Largest code magnitude.
    pub fn q_max(self) -> i32 {
        match self {
            Bits::Eight => 127,
            Bits::Four => 7,
        }
    }

    /// 8 or 4.
    pub fn count(self) -> u32 {
        match self {
            Bits::Eight => 8,
            Bits::Four => 4,
        }
    }

    /// From 8 or 4.
    pub fn from_count(bits: u32) -> Option<Self> {
        match bits {
            8 => Some(Bits::Eight),
            4 => Some(Bits::Four),
            _ => None,
        }
    }
}

/// Quantized values.
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    /// Packed codes.
    pub codes: Vec<u8>,
    /// One scale per block.
    pub scales: Vec<f32>,
    /// Values encoded.
    pub len: usize,
    /// Code width.
    pub bits: Bits,
    /// Values per block.
    pub block: usize,
}

/// Quantizes `values` in blocks of `block` (at least 1), f32 scales.
pub fn quantize(values: &[f32], bits: Bits, block: usize) -> Quantized {
    quantize_with_scale(values, bits, block, |scale| scale)
}

/// Quantizes with scales rounded to f16 (rounded up, so no code exceeds
/// `q_max`): the stored half-precision scales are exactly the ones the
/// codes were made with.
pub fn quantize_f16_scales(values: &[f32], bits: Bits, block: usize) -> Quantized {
    quantize_with_scale(values, bits, block, |scale| {
        let half = half::f16::from_f32(scale);
        if half.to_f32() < scale {
            half::f16::from_bits(half.to_bits() + 1).to_f32()
        } else {
            half.to_f32()
        }
    })
}

fn quantize_with_scale(
    values: &[f32],
    bits: Bits,
    block: usize,
    store: impl Fn(f32) -> f32,
) -> Quantized {
    let block = block.max(1);
    let q_max = bits.q_max();
    let mut scales = Vec::with_capacity(values.len().div_ceil(block));
    let mut signed_codes = Vec::with_capacity(values.len());
    for chunk in values.chunks(block) {
        let max = chunk.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = store(if max > 0.0 { max / q_max as f32 } else { 1.0 });
        scales.push(scale);
        signed_codes.extend(
            chunk
                .iter()
                .map(|v| ((v / scale).round() as i32).clamp(-q_max, q_max)),
        );
    }
    Quantized {
        codes: pack(&signed_codes, bits),
        scales,
        len: values.len(),
        bits,
        block,
    }
}

fn pack(codes: &[i32], bits: Bits) -> Vec<u8> {
    match bits {
        Bits::Eight => codes.iter().map(|&c| (c + 128) as u8).collect(),
        Bits::Four => codes
            .chunks(2)
            .map(|pair| {
                let lo = (pair[0] + 8) as u8;
                let hi = pair.get(1).map_or(8, |&c| (c + 8) as u8);
                lo | (hi << 4)
            })
            .collect(),
    }
}

impl Quantized {
    /// The signed code of value `i`.
    fn code(&self, i: usize) -> i32 {
        match self.bits {
            Bits::Eight => i32::from(self.codes[i]) - 128,
            Bits::Four => {
                let byte = self.codes[i / 2];
                let nibble = if i.is_multiple_of(2) {
                    byte & 0x0f
                } else {
                    byte >> 4
                };
                i32::from(nibble) - 8
            }
        }
    }

    /// The reconstructed values.
    pub fn dequantize(&self) -> Vec<f32> {
        (0..self.len)
            .map(|i| self.code(i) as f32 * self.scales[i / self.block])
            .collect()
    }

    /// Expected byte length of `codes` for `len` values.
    pub fn code_bytes(len: usize, bits: Bits) -> usize {
        match bits {
            Bits::Eight => len,
            Bits::Four => len.div_ceil(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn error_is_at_most_half_a_step(
            values in prop::collection::vec(-10f32..10.0, 1..300),
            four in any::<bool>(),
            block in 1usize..70,
            half_scales in any::<bool>(),
        ) {
            let bits = if four { Bits::Four } else { Bits::Eight };
            let q = if half_scales { quantize_f16_scales(&values, bits, block) } else { quantize(&values, bits, block) };
            prop_assert_eq!(q.codes.len(), Quantized::code_bytes(values.len(), bits));
            for (i, (x, y)) in values.iter().zip(q.dequantize()).enumerate() {
                let step = q.scales[i / block];
                // Half a step, plus the f32 rounding of `x - y` itself (an
                // ulp of values near 10 is 1e-6, 2.4e-5 of a 0.04 half-step:
                // proptest found 8.124738 against a 0.0785 step).
                let slack = 4.0 * f32::EPSILON * x.abs().max(y.abs());
                prop_assert!((x - y).abs() <= step / 2.0 * (1.0 + 1e-5) + slack, "{} -> {} (step {})", x, y, step);
            }
        }
    }

    #[test]
    fn zeros_and_extremes_round_trip() {
        let v = [0.0, 0.0, 1.0, -1.0, 0.5];
        let q = quantize(&v, Bits::Four, 5);
        assert_eq!(q.dequantize()[..4], [0.0, 0.0, 1.0, -1.0]);
        assert_eq!(
            quantize(&[0.0; 3], Bits::Eight, 2).dequantize(),
            vec![0.0; 3]
        );
    }
}
