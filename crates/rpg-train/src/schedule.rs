//! Learning-rate schedules, as functions of the (fractional) epoch, so a
//! resumed run needs no schedule state beyond its step counter.

use rpg_core::names::Named;

/// Shape of the schedule after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleKind {
    /// Constant.
    Constant,
    /// Cosine from lr0 to 0 over the run.
    Cosine,
    /// Multiply by `step_gamma` every `step_epochs`.
    Step,
    /// The paper's smooth decay `lr0 * 0.1^(epoch / exp_decay_epochs)` (45 for ImageNet).
    Exp,
}

impl Named for ScheduleKind {
    const WHAT: &'static str = "schedule";
    const ALL: &'static [Self] = &[Self::Constant, Self::Cosine, Self::Step, Self::Exp];
    fn name(self) -> &'static str {
        match self {
            Self::Constant => "constant",
            Self::Cosine => "cosine",
            Self::Step => "step",
            Self::Exp => "exp",
        }
    }
}

rpg_core::named_text_impls!(ScheduleKind);

/// A schedule with linear warm-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// Shape.
    pub kind: ScheduleKind,
    /// Base learning rate.
    pub base_lr: f64,
    /// Total epochs of the run.
    pub epochs: f64,
    /// Linear warm-up from 0 over this many epochs.
    pub warmup_epochs: f64,
    /// Step schedule period.
    pub step_epochs: f64,
    /// Step schedule factor.
    pub step_gamma: f64,
    /// Exponential schedule: epochs per factor of 10.
    pub exp_decay_epochs: f64,
}

impl Schedule {
    /// The learning rate at fractional epoch `e` (0 at the start).
    pub fn lr(&self, e: f64) -> f64 {
        let shaped = match self.kind {
            ScheduleKind::Constant => self.base_lr,
            ScheduleKind::Cosine => {
                let t = (e / self.epochs.max(1e-9)).clamp(0.0, 1.0);
                0.5 * self.base_lr * (1.0 + (std::f64::consts::PI * t).cos())
            }
            ScheduleKind::Step => {
                self.base_lr
                    * self
                        .step_gamma
                        .powf((e / self.step_epochs.max(1e-9)).floor())
            }
            ScheduleKind::Exp => self.base_lr * 0.1f64.powf(e / self.exp_decay_epochs.max(1e-9)),
        };
        if self.warmup_epochs > 0.0 && e < self.warmup_epochs {
            shaped * (e / self.warmup_epochs)
        } else {
            shaped
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: ScheduleKind) -> Schedule {
        Schedule {
            kind,
            base_lr: 0.1,
            epochs: 10.0,
            warmup_epochs: 0.0,
            step_epochs: 3.0,
            step_gamma: 0.1,
            exp_decay_epochs: 45.0,
        }
    }

    #[test]
    fn shapes_follow_their_formulas() {
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-12, "{a} vs {b}");
        close(schedule(ScheduleKind::Cosine).lr(5.0), 0.05);
        close(schedule(ScheduleKind::Cosine).lr(10.0), 0.0);
        close(schedule(ScheduleKind::Step).lr(2.9), 0.1);
        close(schedule(ScheduleKind::Step).lr(3.0), 0.01);
        close(schedule(ScheduleKind::Exp).lr(45.0), 0.01);
        close(schedule(ScheduleKind::Constant).lr(7.0), 0.1);
        let warm = Schedule {
            warmup_epochs: 2.0,
            ..schedule(ScheduleKind::Constant)
        };
        close(warm.lr(1.0), 0.05);
        close(warm.lr(2.0), 0.1);
    }
}
