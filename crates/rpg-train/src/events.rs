//! What a run reports while it works. The library never prints: it hands
//! each [`Event`] to the caller's [`Events`], and the caller decides what
//! to show (the `rpg` binary draws a progress bar on a terminal and prints
//! lines otherwise; a test or a distributed run's other ranks stay
//! [`Silent`]). Everything that matters also goes to the run's files.

use std::path::Path;

use crate::metrics::EpochRecord;
use crate::summary::Summary;

/// Something a run has to say.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Event<'a> {
    /// Training starts: what is trained, on what.
    Started(&'a RunStarted),
    /// A resumed run continues after `epoch` (its directory is locked).
    Resumed {
        /// The run directory.
        out: &'a Path,
        /// The last epoch done.
        epoch: usize,
    },
    /// A warm start (`init_from`) fitted the ring to a dense model.
    WarmStarted {
        /// The dense model file.
        file: &'a Path,
        /// Relative error of the least-squares fit.
        projection_error: f64,
        /// Test accuracy before any training.
        accuracy: f64,
    },
    /// An epoch starts.
    EpochStarted {
        /// The epoch, from 1.
        epoch: usize,
        /// Epochs configured.
        epochs: usize,
        /// Steps it will take.
        steps: usize,
    },
    /// A step was taken; `running` is set when the epoch's running sums
    /// were read at it (reading synchronises a GPU, so not every step).
    Step {
        /// The running sums, when read.
        running: Option<&'a Running>,
    },
    /// A step line was written to `metrics.jsonl`.
    StepLogged {
        /// The running state, with this step's own loss.
        running: &'a Running,
        /// This step's loss.
        loss: f64,
    },
    /// The epoch was abandoned (the run stops with an error).
    EpochAbandoned,
    /// An epoch ended: its metrics line (also in `metrics.jsonl`).
    EpochEnded {
        /// The record.
        record: &'a EpochRecord,
        /// Epochs configured.
        epochs: usize,
    },
    /// Something worth knowing that does not stop the work.
    Notice(Notice<'a>),
    /// A long job (`reproduce`) moves to its `index`-th task of `total`.
    Task {
        /// The task, from 1.
        index: usize,
        /// Tasks in the job.
        total: usize,
        /// What it does.
        what: &'a str,
    },
    /// The run finished; its summary is written.
    Finished(&'a Summary),
}

/// What a run trains, as it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct RunStarted {
    /// `rpg` or `dense`.
    pub mode: &'static str,
    /// The zoo model.
    pub model: String,
    /// The data set.
    pub dataset: String,
    /// The device, as named by `rpg_nn::device_name`.
    pub device: String,
    /// Parameters of the dense model.
    pub dense_params: u64,
    /// The DoF of an RPG model (None for dense).
    pub dof: Option<rpg_core::DofReport>,
    /// The ring's learning-rate multiplier.
    pub ring_lr_scale: f64,
}

/// An epoch's running figures at a step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Running {
    /// The epoch, from 1.
    pub epoch: usize,
    /// Epochs configured.
    pub epochs: usize,
    /// Steps taken in the whole run.
    pub step: u64,
    /// Mean training loss of the epoch so far.
    pub loss: f64,
    /// Training accuracy of the epoch so far.
    pub accuracy: f64,
    /// The learning rate of the step.
    pub lr: f64,
    /// Training images per second of the epoch so far.
    pub images_per_second: f64,
}

/// A note or warning.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub enum Notice<'a> {
    /// The placement has something to say about the ring.
    Placement(&'a rpg_core::Notice),
    /// `checkpoints/best/` was chosen on another test set than this run's.
    BestOnOtherTestSet {
        /// The test set best/ was chosen on.
        best: &'a rpg_data::TestSetId,
        /// The one this run tests on.
        this: &'a rpg_data::TestSetId,
    },
    /// The training curves could not be drawn (training goes on).
    PlotFailed(&'a crate::Error),
    /// A sweep skipped a run its model cannot have.
    SweepSkipped {
        /// The run's directory.
        dir: &'a Path,
        /// Why.
        reason: &'a crate::Error,
    },
}

impl Notice<'_> {
    /// A warning (something failed) rather than a note.
    pub fn is_warning(&self) -> bool {
        matches!(self, Notice::PlotFailed(_))
    }
}

impl std::fmt::Display for Notice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Notice::Placement(n) => write!(f, "{n}"),
            Notice::BestOnOtherTestSet { best, this } => write!(
                f,
                "checkpoints/best/ was chosen on another test set ({best}); this run tests on {this}, so its accuracies are not compared with it and best/ stays as it is"
            ),
            Notice::PlotFailed(e) => write!(f, "{e}"),
            Notice::SweepSkipped { dir, reason } => {
                write!(f, "skipping {}: {reason}", dir.display())
            }
        }
    }
}

/// Receives a run's events.
pub trait Events {
    /// Called once per event, on the training thread.
    fn event(&mut self, event: Event<'_>);
}

/// Events that go nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Events for Silent {
    fn event(&mut self, _: Event<'_>) {}
}
