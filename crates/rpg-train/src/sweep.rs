//! `rpg sweep`: one architecture at a list of DoF ratios, per placement and
//! seed, plus its dense twin and (on request) a narrower dense model with
//! the same DoF; `sweep.csv`, `fit.json` and `sweep.png`. Finished runs
//! (those with a `summary.json`) are not redone.

use std::path::{Path, PathBuf};

use plotters::prelude::*;
use serde::Serialize;

use rpg_core::PlacementKind;
use rpg_core::names::Named;

use crate::config::TrainConfig;
use crate::error::{Error, Result};
use crate::events::{Event, Events, Notice};
use crate::output::write_json;
use crate::summary::Summary;

/// The paper's ratios.
pub const DEFAULT_RATIOS: [f64; 9] = [1.0, 0.5, 0.25, 0.1, 0.05, 0.02, 0.01, 0.005, 0.002];

/// What to sweep.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    /// Recipe shared by every run (model, data, epochs, ...).
    pub base: TrainConfig,
    /// DoF ratios.
    pub ratios: Vec<f64>,
    /// Placements.
    pub placements: Vec<PlacementKind>,
    /// Seeds.
    pub seeds: Vec<u64>,
    /// Also train narrower dense models with the same total DoF.
    pub dense_same_dof: bool,
    /// Output directory.
    pub out: PathBuf,
}

/// One row of `sweep.csv`.
#[derive(Debug, Clone, Serialize)]
pub struct SweepRow {
    /// `paper`, `hashed`, `naive`, `dense` or `dense-same-dof`.
    pub placement: String,
    /// Requested ratio (1 for the dense twin).
    pub dof_ratio: f64,
    /// Total DoF trained.
    pub total_dof: u64,
    /// Seed.
    pub seed: u64,
    /// Final test accuracy.
    pub test_accuracy: f64,
    /// Final test loss.
    pub test_loss: f64,
    /// Training seconds.
    pub seconds: f64,
}

/// A least-squares line `y = slope * ln(DoF) + intercept`.
#[derive(Debug, Clone, Serialize)]
pub struct Fit {
    /// Slope.
    pub slope: f64,
    /// Intercept.
    pub intercept: f64,
    /// Coefficient of determination.
    pub r2: f64,
    /// Points used.
    pub points: usize,
}

/// Fits `y` against `x` by least squares.
pub fn least_squares(xs: &[f64], ys: &[f64]) -> Option<Fit> {
    let n = xs.len() as f64;
    if xs.len() < 2 {
        return None;
    }
    let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
    let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
    if sxx == 0.0 {
        return None;
    }
    let sxy: f64 = xs.iter().zip(ys).map(|(x, y)| (x - mx) * (y - my)).sum();
    let slope = sxy / sxx;
    let intercept = my - slope * mx;
    let ss_tot: f64 = ys.iter().map(|y| (y - my).powi(2)).sum();
    let ss_res: f64 = xs
        .iter()
        .zip(ys)
        .map(|(x, y)| (y - (slope * x + intercept)).powi(2))
        .sum();
    Some(Fit {
        slope,
        intercept,
        r2: if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else {
            1.0
        },
        points: xs.len(),
    })
}

/// The width multiplier whose dense model has about `target` parameters.
pub(crate) fn width_for_params(
    base: &TrainConfig,
    classes: usize,
    channels: usize,
    side: usize,
    target: u64,
) -> Result<f64> {
    let params = |w: f64| -> Result<u64> {
        let cfg = TrainConfig {
            width: w,
            ..base.clone()
        };
        let mc = crate::setup::model_config(&cfg, classes, channels, side)?;
        Ok(crate::setup::registry(&mc, &rpg_nn::SharingPolicy::paper())?.dense_params())
    };
    let (mut lo, mut hi) = (1e-3f64, 1.0f64);
    for _ in 0..40 {
        let mid = (lo * hi).sqrt();
        if params(mid)? > target {
            hi = mid
        } else {
            lo = mid
        }
    }
    Ok(
        if params(hi)?.abs_diff(target) < params(lo)?.abs_diff(target) {
            hi
        } else {
            lo
        },
    )
}

fn run_dir(out: &Path, label: &str, ratio: f64, seed: u64) -> PathBuf {
    out.join("runs")
        .join(format!("{label}-dof{ratio}-seed{seed}"))
}

/// Trains (or reuses) one run; `None` when the ratio is infeasible.
pub(crate) fn run_one(
    cfg: TrainConfig,
    dir: &Path,
    events: &mut dyn Events,
) -> Result<Option<Summary>> {
    let summary = dir.join("summary.json");
    let cfg = TrainConfig {
        out: Some(dir.to_path_buf()),
        ..cfg
    };
    let stored = dir.join("config.toml");
    if stored.is_file() && TrainConfig::from_toml_file(&stored)? != cfg {
        return Err(Error::invalid_setting(
            "out",
            dir.display(),
            "holds a run with another configuration (epochs, recipe or data differ): choose another output directory for this sweep",
        ));
    }
    if summary.is_file() {
        let text = std::fs::read_to_string(&summary).map_err(Error::io(&summary))?;
        return serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| Error::Json {
                path: summary,
                source,
            });
    }
    // An interrupted run resumes; a fresh one starts.
    let resume = crate::checkpoint::find_last(dir).map(|_| dir.to_path_buf());
    let cfg = TrainConfig {
        out: Some(dir.to_path_buf()),
        ..cfg
    };
    match crate::trainer::train(cfg, resume.as_deref(), events) {
        Ok(s) => Ok(Some(s)),
        Err(
            e @ Error::DofRatio {
                source: rpg_core::Error::RatioTooSmall { .. },
                ..
            },
        ) => {
            events.event(Event::Notice(Notice::SweepSkipped { dir, reason: &e }));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Runs the plan and writes the outputs; returns the rows.
pub fn sweep(plan: &SweepPlan, events: &mut dyn Events) -> Result<Vec<SweepRow>> {
    std::fs::create_dir_all(&plan.out).map_err(Error::io(&plan.out))?;
    let mut rows = Vec::new();
    let row = |label: &str, ratio: f64, seed: u64, s: &Summary| SweepRow {
        placement: label.to_string(),
        dof_ratio: ratio,
        total_dof: s.total_dof,
        seed,
        test_accuracy: s.test_accuracy,
        test_loss: s.test_loss,
        seconds: s.train_seconds,
    };
    for &seed in &plan.seeds {
        let dense_cfg = TrainConfig {
            dense: true,
            dof: None,
            ring: None,
            seed,
            ..plan.base.clone()
        };
        if let Some(s) = run_one(dense_cfg, &run_dir(&plan.out, "dense", 1.0, seed), events)? {
            rows.push(row("dense", 1.0, seed, &s));
        }
        for placement in &plan.placements {
            for &ratio in &plan.ratios {
                let cfg = TrainConfig {
                    dense: false,
                    dof: Some(ratio),
                    ring: None,
                    placement: *placement,
                    seed,
                    ..plan.base.clone()
                };
                let label = placement.name();
                if let Some(s) = run_one(cfg, &run_dir(&plan.out, label, ratio, seed), events)? {
                    rows.push(row(label, ratio, seed, &s));
                }
            }
        }
        if plan.dense_same_dof {
            let dense = rows
                .iter()
                .find(|r| r.placement == "dense")
                .map(|r| r.total_dof)
                .unwrap_or(0);
            // Only the data set's shape is needed: one test image.
            let mut one_image = plan.base.clone();
            one_image.data.test_limit = Some(1);
            let test = crate::evaluate::load_test_data(&one_image)?;
            for &ratio in plan.ratios.iter().filter(|&&r| r < 1.0) {
                let target = (ratio * dense as f64).round() as u64;
                let width = width_for_params(
                    &plan.base,
                    test.num_classes,
                    test.channels,
                    test.image_size,
                    target,
                )?;
                let cfg = TrainConfig {
                    dense: true,
                    dof: None,
                    ring: None,
                    width,
                    seed,
                    ..plan.base.clone()
                };
                if let Some(s) = run_one(
                    cfg,
                    &run_dir(&plan.out, "dense-same-dof", ratio, seed),
                    events,
                )? {
                    rows.push(row("dense-same-dof", ratio, seed, &s));
                }
            }
        }
    }
    write_outputs(plan, &rows)?;
    Ok(rows)
}

fn write_outputs(plan: &SweepPlan, rows: &[SweepRow]) -> Result<()> {
    let csv_path = plan.out.join("sweep.csv");
    let mut csv =
        String::from("placement,dof_ratio,total_dof,seed,test_accuracy,test_loss,seconds\n");
    for r in rows {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{:.1}\n",
            r.placement, r.dof_ratio, r.total_dof, r.seed, r.test_accuracy, r.test_loss, r.seconds
        ));
    }
    std::fs::write(&csv_path, csv).map_err(Error::io(&csv_path))?;
    let mut fits = serde_json::Map::new();
    for placement in rows
        .iter()
        .map(|r| r.placement.clone())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let mine: Vec<&SweepRow> = rows.iter().filter(|r| r.placement == placement).collect();
        let xs: Vec<f64> = mine.iter().map(|r| (r.total_dof as f64).ln()).collect();
        let acc: Vec<f64> = mine.iter().map(|r| r.test_accuracy).collect();
        let log_err: Vec<f64> = mine
            .iter()
            .map(|r| (1.0 - r.test_accuracy).max(1e-6).ln())
            .collect();
        if let (Some(a), Some(e)) = (least_squares(&xs, &acc), least_squares(&xs, &log_err)) {
            fits.insert(
                placement,
                serde_json::json!({ "accuracy_vs_ln_dof": a, "ln_error_vs_ln_dof": e }),
            );
        }
    }
    write_json(&plan.out.join("fit.json"), &fits)?;
    plot(
        &plan.out.join("sweep.png"),
        &format!("{} on {}", plan.base.model, plan.base.data.dataset),
        rows,
        &fits,
    )
}

fn plot(
    path: &Path,
    title: &str,
    rows: &[SweepRow],
    fits: &serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    crate::plot::register_font();
    let err = |e: &dyn std::fmt::Display| crate::plot::PlotError::new(path, e);
    if rows.is_empty() {
        return Ok(());
    }
    let xs: Vec<f64> = rows.iter().map(|r| (r.total_dof as f64).max(1.0)).collect();
    let (xmin, xmax) = xs
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &x| (a.min(x), b.max(x)));
    let (ymin, ymax) = rows.iter().fold((f64::MAX, f64::MIN), |(a, b), r| {
        (a.min(r.test_accuracy), b.max(r.test_accuracy))
    });
    let pad = ((ymax - ymin) * 0.1).max(0.005);
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d(
            (xmin * 0.8..xmax * 1.25).log_scale(),
            (ymin - pad)..(ymax + pad).min(1.0),
        )
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc("total degrees of freedom (log scale)")
        .y_desc("test accuracy")
        .draw()
        .map_err(|e| err(&e))?;
    let colors = [BLUE, RED, GREEN, MAGENTA, BLACK, CYAN];
    let labels: Vec<String> = rows
        .iter()
        .map(|r| r.placement.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    for (i, label) in labels.iter().enumerate() {
        let color = colors[i % colors.len()];
        let points: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| &r.placement == label)
            .map(|r| ((r.total_dof as f64).max(1.0), r.test_accuracy))
            .collect();
        chart
            .draw_series(points.iter().map(|&p| Circle::new(p, 5, color.filled())))
            .map_err(|e| err(&e))?
            .label(label.as_str())
            .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
        if let Some(fit) = fits
            .get(label)
            .and_then(|f| f["accuracy_vs_ln_dof"].as_object())
        {
            let (slope, intercept) = (
                fit["slope"].as_f64().unwrap_or(0.0),
                fit["intercept"].as_f64().unwrap_or(0.0),
            );
            let lo = points.iter().map(|p| p.0).fold(f64::MAX, f64::min);
            let hi = points.iter().map(|p| p.0).fold(f64::MIN, f64::max);
            let line: Vec<(f64, f64)> = (0..=20)
                .map(|k| lo * (hi / lo).powf(k as f64 / 20.0))
                .map(|x| (x, slope * x.ln() + intercept))
                .collect();
            chart
                .draw_series(LineSeries::new(line, color.stroke_width(1)))
                .map_err(|e| err(&e))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_squares_recovers_a_line() {
        let xs = [1.0, 2.0, 3.0, 4.0];
        let ys: Vec<f64> = xs.iter().map(|x| 0.5 * x + 2.0).collect();
        let fit = least_squares(&xs, &ys).unwrap();
        assert!((fit.slope - 0.5).abs() < 1e-12 && (fit.intercept - 2.0).abs() < 1e-12);
        assert!((fit.r2 - 1.0).abs() < 1e-12);
        assert!(least_squares(&[1.0], &[1.0]).is_none());
    }
}
