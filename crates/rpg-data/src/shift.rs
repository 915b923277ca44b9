//! Test sets moved out of the training distribution, for robustness
//! checks: every image rotated about its centre, or with Gaussian pixel
//! noise. Deterministic: the noise comes from rpg-core's frozen generator,
//! so a shifted set is the same on every machine and version.

use rpg_core::rng::SplitMix64;

use crate::dataset::ImageSet;

/// A distribution shift of a test set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shift {
    /// Rotated counter-clockwise by this many degrees (bilinear, zero
    /// outside the image).
    Rotate(f64),
    /// Gaussian noise of this standard deviation added to pixels in
    /// [0, 1], then clamped, drawn from this seed.
    Noise {
        /// Standard deviation, in units of the pixel range.
        sigma: f64,
        /// The noise's seed.
        seed: u64,
    },
}

impl std::fmt::Display for Shift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Shift::Rotate(deg) => write!(f, "rotated {deg}°"),
            Shift::Noise { sigma, .. } => write!(f, "noise σ={sigma}"),
        }
    }
}

impl Shift {
    /// `set` with every image shifted; labels unchanged.
    pub fn apply(&self, set: &ImageSet) -> ImageSet {
        let (h, w) = (set.height, set.width);
        let mut images = set.images.clone();
        match *self {
            Shift::Rotate(degrees) => {
                let (sin, cos) = degrees.to_radians().sin_cos();
                let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
                for (src, dst) in set.images.chunks(h * w).zip(images.chunks_mut(h * w)) {
                    for y in 0..h {
                        for x in 0..w {
                            // The source of output pixel (y, x): the inverse rotation.
                            let (dy, dx) = (y as f64 - cy, x as f64 - cx);
                            let sx = cos * dx - sin * dy + cx;
                            let sy = sin * dx + cos * dy + cy;
                            dst[y * w + x] = bilinear(src, h, w, sy, sx);
                        }
                    }
                }
            }
            Shift::Noise { sigma, seed } => {
                let mut rng = SplitMix64::new(seed);
                for p in &mut images {
                    let v = f64::from(*p) / 255.0 + sigma * gaussian(&mut rng);
                    *p = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                }
            }
        }
        ImageSet {
            images,
            labels: set.labels.clone(),
            channels: set.channels,
            height: h,
            width: w,
        }
    }
}

/// The plane `src` (h x w) at (y, x), bilinear, zero outside.
fn bilinear(src: &[u8], h: usize, w: usize, y: f64, x: f64) -> u8 {
    let at = |yy: i64, xx: i64| -> f64 {
        if yy < 0 || xx < 0 || yy >= h as i64 || xx >= w as i64 {
            0.0
        } else {
            f64::from(src[yy as usize * w + xx as usize])
        }
    };
    let (y0, x0) = (y.floor(), x.floor());
    let (fy, fx) = (y - y0, x - x0);
    let (y0, x0) = (y0 as i64, x0 as i64);
    let v = at(y0, x0) * (1.0 - fy) * (1.0 - fx)
        + at(y0, x0 + 1) * (1.0 - fy) * fx
        + at(y0 + 1, x0) * fy * (1.0 - fx)
        + at(y0 + 1, x0 + 1) * fy * fx;
    v.round().clamp(0.0, 255.0) as u8
}

/// A standard normal draw (Box-Muller).
fn gaussian(rng: &mut SplitMix64) -> f64 {
    // 53-bit uniforms in (0, 1]: ln never sees 0.
    let u = |r: &mut SplitMix64| ((r.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let (u1, u2) = (u(rng), u(rng));
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pixels: &[u8], side: usize) -> ImageSet {
        ImageSet {
            images: pixels.to_vec(),
            labels: vec![7; pixels.len() / (side * side)],
            channels: 1,
            height: side,
            width: side,
        }
    }

    #[test]
    fn rotation_by_zero_is_the_identity_and_by_90_moves_pixels_as_expected() {
        let pixels: Vec<u8> = (0..9).map(|i| i * 20).collect();
        let s = set(&pixels, 3);
        assert_eq!(Shift::Rotate(0.0).apply(&s).images, pixels);
        // Counter-clockwise by 90: the top-right corner goes to the top-left.
        let r = Shift::Rotate(90.0).apply(&s);
        assert_eq!(r.images[0], pixels[2]);
        assert_eq!(r.images[4], pixels[4], "the centre stays");
        assert_eq!(r.labels, s.labels);
        // Four quarter turns come back.
        let mut back = s.clone();
        for _ in 0..4 {
            back = Shift::Rotate(90.0).apply(&back);
        }
        assert_eq!(back.images, pixels);
    }

    #[test]
    fn noise_is_deterministic_bounded_and_of_the_given_size() {
        let s = set(&vec![128; 64 * 64], 64);
        let a = Shift::Noise {
            sigma: 0.1,
            seed: 3,
        }
        .apply(&s);
        assert_eq!(
            a.images,
            Shift::Noise {
                sigma: 0.1,
                seed: 3
            }
            .apply(&s)
            .images
        );
        assert_ne!(
            a.images,
            Shift::Noise {
                sigma: 0.1,
                seed: 4
            }
            .apply(&s)
            .images
        );
        let n = a.images.len() as f64;
        let d: Vec<f64> = a
            .images
            .iter()
            .map(|&p| (f64::from(p) - 128.0) / 255.0)
            .collect();
        let mean = d.iter().sum::<f64>() / n;
        let sd = (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((sd - 0.1).abs() < 0.01, "sd {sd}");
    }
}
