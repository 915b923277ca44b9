//! How a run's events look on the console: a progress bar per epoch when
//! stderr is a terminal, one line per logged step otherwise; the run's
//! start, its epochs and its end as lines on stdout; notes and warnings on
//! stderr.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};
use rpg_train::Summary;
use rpg_train::events::{Event, Events, Notice, RunStarted};
use rpg_train::metrics::EpochRecord;

/// Renders events on the console.
#[derive(Debug)]
pub struct Console {
    /// The current epoch's bar (hidden when stderr is not a terminal).
    bar: ProgressBar,
}

impl Console {
    /// A console renderer.
    pub fn new() -> Self {
        Self {
            bar: ProgressBar::hidden(),
        }
    }
}

fn epoch_bar(steps: usize, epoch: usize, epochs: usize) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template("epoch {prefix} [{bar:28}] {pos}/{len} {msg} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{epoch}/{epochs}"));
    bar
}

fn started_line(s: &RunStarted) -> String {
    format!(
        "{} {} on {} ({}), {} params dense{}",
        s.mode,
        s.model,
        s.dataset,
        s.device,
        s.dense_params,
        s.dof
            .map(|d| format!(
                ", ring {} + unshared {} = {} DoF ({:.2}% of dense), ring lr x{:.4}",
                d.ring_dof,
                d.unshared_params,
                d.total_dof,
                100.0 * d.dof_ratio,
                s.ring_lr_scale
            ))
            .unwrap_or_default()
    )
}

fn epoch_line(record: &EpochRecord, epochs: usize) -> String {
    format!(
        "epoch {}/{epochs}: train loss {:.4} acc {:.4} | test loss {:.4} acc {:.4}{} | {:.0} img/s, {:.1}s",
        record.epoch,
        record.train_loss,
        record.train_accuracy,
        record.test_loss,
        record.test_accuracy,
        record
            .test_top5
            .map(|t| format!(" top5 {t:.4}"))
            .unwrap_or_default(),
        record.images_per_second,
        record.seconds
    )
}

fn done_line(summary: &Summary) -> String {
    format!(
        "done: test accuracy {:.2}% (best {:.2}% at epoch {}), {:.0}s of training; results in {}",
        100.0 * summary.test_accuracy,
        100.0 * summary.best_test_accuracy,
        summary.best_epoch,
        summary.train_seconds,
        summary.out_dir.display()
    )
}

impl Events for Console {
    fn event(&mut self, event: Event<'_>) {
        match event {
            Event::Started(started) => println!("{}", started_line(started)),
            Event::Resumed { out, epoch } => {
                println!("resuming {} after epoch {epoch}", out.display());
            }
            Event::WarmStarted {
                file,
                projection_error,
                accuracy,
            } => println!(
                "warm start from {}: ring fitted by least squares (relative error {projection_error:.4}), test accuracy before training {:.2}%",
                file.display(),
                100.0 * accuracy
            ),
            Event::EpochStarted {
                epoch,
                epochs,
                steps,
            } => self.bar = epoch_bar(steps, epoch, epochs),
            Event::Step { running } => {
                if let Some(r) = running {
                    self.bar.set_message(format!(
                        "loss {:.4} acc {:.3} lr {:.4} {:.0} img/s",
                        r.loss, r.accuracy, r.lr, r.images_per_second
                    ));
                }
                self.bar.inc(1);
                // The bar goes once the steps are done, before evaluation.
                if self.bar.length() == Some(self.bar.position()) {
                    self.bar.finish_and_clear();
                }
            }
            // With a bar, the bar shows it.
            Event::StepLogged { running: r, loss } if self.bar.is_hidden() => println!(
                "epoch {}/{} step {} loss {loss:.4} lr {:.4} {:.0} img/s",
                r.epoch, r.epochs, r.step, r.lr, r.images_per_second
            ),
            Event::EpochAbandoned => self.bar.abandon(),
            Event::EpochEnded { record, epochs } => println!("{}", epoch_line(record, epochs)),
            Event::Notice(notice) => print_notice(&notice),
            Event::Task { index, total, what } => println!("[{index}/{total}] {what}"),
            Event::Finished(summary) => println!("{}", done_line(summary)),
            _ => {}
        }
    }
}

/// A note or warning on stderr.
pub fn print_notice(notice: &Notice<'_>) {
    let kind = if notice.is_warning() {
        "warning"
    } else {
        "note"
    };
    eprintln!("{kind}: {notice}");
}
