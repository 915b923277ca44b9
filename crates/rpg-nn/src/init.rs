//! Seeded, order-independent parameter initialisation.
//!
//! Candle's CPU random generator cannot be seeded, so initial values are
//! drawn here from `rpg_core`'s generator, keyed by (seed, parameter name):
//! the same seed gives the same model whatever order layers are built in.

use candle_nn::Init;
use rpg_core::rng::{Pcg32, SplitMix64};

/// FNV-1a, 64 bit: a stable hash of a parameter name.
pub fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Initial values for a parameter of `dims`, as candle-nn's `Init::var`
/// would draw them, but from a generator seeded by `seed` and `name`.
pub fn init_values(init: Init, dims: &[usize], seed: u64, name: &str) -> Vec<f32> {
    let len: usize = dims.iter().product();
    let mut rng = Pcg32::new(SplitMix64::new(seed ^ fnv1a(name)).next_u64(), 5 << 32);
    let normal =
        |rng: &mut Pcg32, mean: f64, std: f64| (mean + std * f64::from(rng.next_normal())) as f32;
    let uniform =
        |rng: &mut Pcg32, lo: f64, up: f64| (lo + (up - lo) * f64::from(rng.next_f32())) as f32;
    match init {
        Init::Const(v) => vec![v as f32; len],
        Init::Randn { mean, stdev } => (0..len).map(|_| normal(&mut rng, mean, stdev)).collect(),
        Init::Uniform { lo, up } => (0..len).map(|_| uniform(&mut rng, lo, up)).collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = fan.for_shape(&dims.into()).max(1);
            let std = non_linearity.gain() / (fan as f64).sqrt();
            match dist {
                candle_nn::init::NormalOrUniform::Normal => {
                    (0..len).map(|_| normal(&mut rng, 0.0, std)).collect()
                }
                candle_nn::init::NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    (0..len).map(|_| uniform(&mut rng, -bound, bound)).collect()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_and_name_same_values() {
        let a = init_values(candle_nn::init::DEFAULT_KAIMING_NORMAL, &[8, 4], 1, "w");
        let b = init_values(candle_nn::init::DEFAULT_KAIMING_NORMAL, &[8, 4], 1, "w");
        let c = init_values(candle_nn::init::DEFAULT_KAIMING_NORMAL, &[8, 4], 1, "v");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn kaiming_normal_has_the_right_std() {
        let v = init_values(candle_nn::init::DEFAULT_KAIMING_NORMAL, &[64, 100], 3, "w");
        let var = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / v.len() as f64;
        assert!((var.sqrt() / (2.0f64 / 100.0).sqrt() - 1.0).abs() < 0.05);
    }
}
