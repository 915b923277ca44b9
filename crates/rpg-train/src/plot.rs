//! PNG plots with a bundled font (no system fontconfig needed).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::metrics::EpochRecord;

static FONT: Once = Once::new();

/// Registers the bundled DejaVu Sans as `sans-serif`.
pub fn register_font() {
    FONT.call_once(|| {
        // The font is valid by construction (a committed file); a failure
        // here would only lose plot text, so it is not fatal.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            include_bytes!("../assets/DejaVuSans.ttf"),
        );
    });
}

/// A plot could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[error("plotting {path}: {message}")]
pub struct PlotError {
    /// The image file.
    pub path: std::path::PathBuf,
    /// What the drawing backend said.
    pub message: String,
}

impl PlotError {
    /// A drawing backend's error while drawing `path`.
    pub fn new(path: &Path, e: impl std::fmt::Display) -> Self {
        Self {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

/// Loss and accuracy against epoch, train and test, side by side.
pub fn training_curves(path: &Path, title: &str, epochs: &[EpochRecord]) -> Result<(), PlotError> {
    register_font();
    let err = |e: &dyn std::fmt::Display| PlotError::new(path, e);
    let root = BitMapBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| err(&e))?;
    let (left, right) = root.split_horizontally(550);
    let last = epochs.last().map_or(1, |r| r.epoch).max(1) as f64;
    type Series<'a> = (&'a str, Box<dyn Fn(&EpochRecord) -> f64>, RGBColor);
    let panels: [(&DrawingArea<_, _>, &str, Vec<Series<'_>>); 2] = [
        (
            &left,
            "loss",
            vec![
                ("train", Box::new(|r: &EpochRecord| r.train_loss), BLUE),
                ("test", Box::new(|r: &EpochRecord| r.test_loss), RED),
            ],
        ),
        (
            &right,
            "accuracy",
            vec![
                ("train", Box::new(|r: &EpochRecord| r.train_accuracy), BLUE),
                ("test", Box::new(|r: &EpochRecord| r.test_accuracy), RED),
            ],
        ),
    ];
    for (area, label, series) in panels {
        let values: Vec<f64> = epochs
            .iter()
            .flat_map(|r| series.iter().map(move |s| (s.1)(r)))
            .collect();
        let (lo, hi) = values
            .iter()
            .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        let (lo, hi) = if lo < hi {
            (lo, hi)
        } else {
            (lo - 0.5, lo + 0.5)
        };
        let pad = (hi - lo) * 0.05;
        let mut chart = ChartBuilder::on(area)
            .margin(15)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..last, (lo - pad)..(hi + pad))
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(label)
            .draw()
            .map_err(|e| err(&e))?;
        for (name, get, color) in series {
            let points: Vec<(f64, f64)> = epochs.iter().map(|r| (r.epoch as f64, get(r))).collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                .map_err(|e| err(&e))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))?;
    Ok(())
}
