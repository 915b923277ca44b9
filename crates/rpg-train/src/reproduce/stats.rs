//! The statistics of the reproduction: means with spread, Welch's t-test,
//! a least-squares line with its slope's confidence interval, and when a
//! learning curve first reaches a level.

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};

/// Mean and sample standard deviation (0 for one value).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct MeanSd {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n - 1).
    pub sd: f64,
    /// Values.
    pub n: usize,
}

impl MeanSd {
    /// Of `values`; `None` when empty.
    pub fn of(values: &[f64]) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = if n > 1 {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        Some(Self { mean, sd, n })
    }
}

/// Welch's two-sided t-test of `a` against `b`: the p-value that their
/// means are equal, `None` with fewer than two values a side or no spread.
pub fn welch_p(a: &[f64], b: &[f64]) -> Option<f64> {
    let (ma, mb) = (MeanSd::of(a)?, MeanSd::of(b)?);
    if ma.n < 2 || mb.n < 2 {
        return None;
    }
    let (va, vb) = (ma.sd.powi(2) / ma.n as f64, mb.sd.powi(2) / mb.n as f64);
    let se2 = va + vb;
    if se2 <= 0.0 {
        return (ma.mean == mb.mean).then_some(1.0).or(Some(0.0));
    }
    let t = (ma.mean - mb.mean) / se2.sqrt();
    let df = se2.powi(2) / (va.powi(2) / (ma.n - 1) as f64 + vb.powi(2) / (mb.n - 1) as f64);
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    Some(2.0 * (1.0 - dist.cdf(t.abs())))
}

/// `y = slope * x + intercept` by least squares, with R^2 and the slope's
/// 95% confidence interval (Student's t with n - 2 degrees of freedom).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LineFit {
    /// Slope.
    pub slope: f64,
    /// Intercept.
    pub intercept: f64,
    /// Coefficient of determination.
    pub r2: f64,
    /// The slope's 95% interval.
    pub slope_ci: [f64; 2],
    /// Points.
    pub n: usize,
}

/// Fits `ys` against `xs`; `None` with fewer than three points or one x.
pub fn fit_line(xs: &[f64], ys: &[f64]) -> Option<LineFit> {
    let n = xs.len();
    if n < 3 || ys.len() != n {
        return None;
    }
    let line = crate::sweep::least_squares(xs, ys)?;
    let nf = n as f64;
    let mx = xs.iter().sum::<f64>() / nf;
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    let ss_res: f64 = xs
        .iter()
        .zip(ys)
        .map(|(x, y)| (y - line.slope * x - line.intercept).powi(2))
        .sum();
    let slope = line.slope;
    let se = (ss_res / (nf - 2.0) / sxx).sqrt();
    let t = StudentsT::new(0.0, 1.0, nf - 2.0).ok()?.inverse_cdf(0.975);
    Some(LineFit {
        slope,
        intercept: line.intercept,
        r2: line.r2,
        slope_ci: [slope - t * se, slope + t * se],
        n,
    })
}

/// The (fractional, linearly interpolated) epoch at which `curve` (test
/// accuracy after epochs 1, 2, ...) first reaches `level`; `None` if never.
pub fn epochs_to_reach(curve: &[f64], level: f64) -> Option<f64> {
    let mut before = (0.0, 0.0);
    for (i, &acc) in curve.iter().enumerate() {
        let epoch = (i + 1) as f64;
        if acc >= level {
            let (e0, a0) = before;
            return Some(if acc > a0 && i > 0 {
                e0 + (level - a0) / (acc - a0)
            } else {
                epoch
            });
        }
        before = (epoch, acc);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_sd() {
        let m = MeanSd::of(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((m.mean, m.sd, m.n), (2.0, 1.0, 3));
        assert_eq!(MeanSd::of(&[5.0]).unwrap().sd, 0.0);
        assert!(MeanSd::of(&[]).is_none());
    }

    #[test]
    fn welch_separates_distinct_samples_and_not_overlapping_ones() {
        // t = -3.4125 with 3.806 degrees of freedom; p by integrating
        // Student's density numerically: 0.02914.
        let p = welch_p(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.5]).unwrap();
        assert!((p - 0.02914).abs() < 0.0005, "{p}");
        let same = welch_p(&[1.0, 2.0, 3.0], &[1.1, 2.0, 2.9]).unwrap();
        assert!(same > 0.9, "{same}");
        assert!(welch_p(&[1.0], &[2.0, 3.0]).is_none());
    }

    #[test]
    fn a_line_is_fitted_exactly_and_noise_widens_the_interval() {
        let xs = [0.0, 1.0, 2.0, 3.0];
        let exact = fit_line(&xs, &[1.0, 3.0, 5.0, 7.0]).unwrap();
        assert!((exact.slope - 2.0).abs() < 1e-12 && (exact.r2 - 1.0).abs() < 1e-12);
        assert!((exact.slope_ci[1] - exact.slope_ci[0]).abs() < 1e-9);
        let noisy = fit_line(&xs, &[1.0, 3.5, 4.5, 7.0]).unwrap();
        assert!(noisy.slope_ci[0] < noisy.slope && noisy.slope < noisy.slope_ci[1]);
        assert!(noisy.r2 < 1.0);
        assert!(fit_line(&[1.0, 1.0, 1.0], &[0.0, 1.0, 2.0]).is_none());
    }

    #[test]
    fn reaching_a_level_interpolates_between_epochs() {
        let curve = [0.5, 0.8, 0.9];
        assert_eq!(epochs_to_reach(&curve, 0.4), Some(1.0));
        assert!((epochs_to_reach(&curve, 0.65).unwrap() - 1.5).abs() < 1e-12);
        assert_eq!(epochs_to_reach(&curve, 0.9), Some(3.0));
        assert_eq!(epochs_to_reach(&curve, 0.95), None);
    }
}
