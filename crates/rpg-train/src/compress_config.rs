//! `CompressConfig`: every option of `rpg compress`, declared once with its
//! default; the command line overrides it and the report records it.

use rpg_compress::{Bits, CompressSettings, PruneScope};
use rpg_core::names::Named;
use serde::{Deserialize, Serialize};

use crate::config::as_text;
use crate::error::{Error, Result};

/// Ring quantization.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingQuant {
    /// 8-bit codes.
    Int8,
    /// 4-bit codes, two per byte.
    Int4,
    /// Keep f32.
    None,
}

impl Named for RingQuant {
    const WHAT: &'static str = "ring quantization";
    const ALL: &'static [Self] = &[RingQuant::Int8, RingQuant::Int4, RingQuant::None];
    fn name(self) -> &'static str {
        match self {
            RingQuant::Int8 => "int8",
            RingQuant::Int4 => "int4",
            RingQuant::None => "none",
        }
    }
}

rpg_core::named_text_impls!(RingQuant);

/// How block scales are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScaleDtype {
    /// Half precision (smaller).
    F16,
    /// Single precision.
    F32,
}

impl Named for ScaleDtype {
    const WHAT: &'static str = "scale dtype";
    const ALL: &'static [Self] = &[ScaleDtype::F16, ScaleDtype::F32];
    fn name(self) -> &'static str {
        match self {
            ScaleDtype::F16 => "f16",
            ScaleDtype::F32 => "f32",
        }
    }
}

rpg_core::named_text_impls!(ScaleDtype);

/// Quantization of the unshared tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsharedQuant {
    /// 8 bits, one scale per tensor.
    Int8,
    /// Keep f32.
    None,
}

impl Named for UnsharedQuant {
    const WHAT: &'static str = "unshared quantization";
    const ALL: &'static [Self] = &[UnsharedQuant::Int8, UnsharedQuant::None];
    fn name(self) -> &'static str {
        match self {
            UnsharedQuant::Int8 => "int8",
            UnsharedQuant::None => "none",
        }
    }
}

rpg_core::named_text_impls!(UnsharedQuant);

/// Pruning of the materialised model (the artifact is then a dense model).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WeightPruning {
    /// Fraction of conv/linear weights zeroed by magnitude.
    pub fraction: f64,
    /// Where the threshold is drawn.
    pub scope: PruneScope,
    /// Fraction of channels removed (groups of tied channels, smallest L1
    /// norm).
    pub channels: f64,
    /// Per group or one ranking over all groups.
    pub channel_scope: PruneScope,
    /// Kept channels per group rounded up to a multiple of this.
    pub channel_round_to: usize,
    /// Fine-tuning epochs (after pruning, or before ring compression).
    pub finetune_epochs: usize,
    /// Fine-tuning learning rate.
    pub finetune_lr: f64,
}

/// Every option of `rpg compress`; the keys are the flags' names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CompressConfig {
    /// Ring quantization: every shared weight is a signed, scaled copy of a
    /// ring entry, so this quantizes all shared layers at once.
    #[serde(with = "as_text")]
    pub quant: RingQuant,
    /// Values per quantization block (one scale each); `None`: 256 for
    /// int8, 64 for int4 ([`CompressConfig::block`]).
    pub block: Option<usize>,
    /// Block scales as f16 or f32.
    #[serde(with = "as_text")]
    pub scale_dtype: ScaleDtype,
    /// Fraction of ring entries pruned by magnitude (stored sparse).
    pub prune_ring: f64,
    /// Fraction of the materialised conv/linear weights pruned by
    /// magnitude; the result is a dense model.
    pub prune: f64,
    /// Where `prune`'s threshold is drawn.
    #[serde(with = "as_text")]
    pub prune_scope: PruneScope,
    /// Fraction of channels removed: channels that a residual add or a
    /// depthwise conv ties together go as one group, found from the model's
    /// graph.
    pub prune_channels: f64,
    /// `layer`: every group loses `prune_channels` of its channels;
    /// `global`: the weakest channels relative to their group's mean go,
    /// wherever they are.
    #[serde(with = "as_text")]
    pub channel_scope: PruneScope,
    /// Kept channels per group rounded up to a multiple of this (8 suits
    /// the CPU kernels' vectors); 1 keeps the exact share.
    pub channel_round_to: usize,
    /// Fine-tuning epochs: after pruning the materialised model; else of
    /// the RPG model before its ring is compressed (quantization-aware with
    /// `qat`).
    pub finetune_epochs: usize,
    /// Fine-tuning learning rate (cosine schedule).
    pub finetune_lr: f64,
    /// Quantization-aware fine-tuning: the `finetune_epochs` train the RPG
    /// model with its ring and unshared tensors quantized as the artifact
    /// stores them (straight-through gradient) before compressing.
    pub qat: bool,
    /// Quantization of the unshared tensors.
    #[serde(with = "as_text")]
    pub quant_unshared: UnsharedQuant,
    /// Timed runs per latency figure (the median is reported).
    pub latency_runs: usize,
    /// Also write the compressed model as ONNX, f32 and int8 (QDQ, which
    /// ONNX Runtime runs with its integer kernels), with both accuracies.
    pub onnx_int8: bool,
    /// Training images whose activation ranges set the int8 scales.
    pub calibration_images: usize,
}

impl Default for CompressConfig {
    fn default() -> Self {
        Self {
            quant: RingQuant::Int8,
            block: None,
            scale_dtype: ScaleDtype::F16,
            prune_ring: 0.0,
            prune: 0.0,
            prune_scope: PruneScope::Global,
            prune_channels: 0.0,
            channel_scope: PruneScope::Layer,
            channel_round_to: 1,
            finetune_epochs: 0,
            finetune_lr: 0.01,
            qat: false,
            quant_unshared: UnsharedQuant::Int8,
            latency_runs: 21,
            onnx_int8: false,
            calibration_images: 512,
        }
    }
}

impl CompressConfig {
    /// The block size: as set, else 256 values for int8 and 64 for int4,
    /// whose coarser steps want smaller blocks (measured on LeNet-5,
    /// docs/compression.md).
    pub fn block(&self) -> usize {
        self.block.unwrap_or(match self.quant {
            RingQuant::Int4 => 64,
            RingQuant::Int8 | RingQuant::None => 256,
        })
    }

    /// This configuration with the block size resolved, as the report
    /// records it.
    pub fn resolved(&self) -> Self {
        Self {
            block: Some(self.block()),
            ..self.clone()
        }
    }

    /// Refuses values out of range, naming the key.
    pub fn validate(&self) -> Result<()> {
        let fraction = |key, value: f64| {
            if (0.0..1.0).contains(&value) {
                Ok(())
            } else {
                Err(Error::invalid_setting(
                    key,
                    value,
                    "must be in [0, 1): the share to remove",
                ))
            }
        };
        fraction("prune_ring", self.prune_ring)?;
        fraction("prune", self.prune)?;
        fraction("prune_channels", self.prune_channels)?;
        if self.block == Some(0) {
            return Err(Error::invalid_setting("block", 0, "must be positive"));
        }
        if self.qat && self.finetune_epochs == 0 {
            return Err(Error::invalid_setting(
                "finetune_epochs",
                0,
                "quantization-aware training (qat) needs at least one epoch of fine-tuning",
            ));
        }
        if self.qat && (self.prune > 0.0 || self.prune_channels > 0.0) {
            return Err(Error::invalid_setting(
                "qat",
                true,
                "quantization-aware training applies to the ring and unshared tensors; combine it with quant and prune_ring, not with prune or prune_channels",
            ));
        }
        if self.onnx_int8 && self.calibration_images == 0 {
            return Err(Error::invalid_setting(
                "calibration_images",
                0,
                "int8 ONNX needs at least one calibration image",
            ));
        }
        if self.channel_round_to == 0 {
            return Err(Error::invalid_setting(
                "channel_round_to",
                0,
                "must be positive (1 keeps the exact share)",
            ));
        }
        if self.latency_runs == 0 {
            return Err(Error::invalid_setting(
                "latency_runs",
                0,
                "must be positive",
            ));
        }
        if !(self.finetune_lr > 0.0 && self.finetune_lr.is_finite()) {
            return Err(Error::invalid_setting(
                "finetune_lr",
                self.finetune_lr,
                "must be a positive number",
            ));
        }
        Ok(())
    }

    /// The ring and unshared-tensor settings of `rpg-compress`.
    pub fn settings(&self) -> CompressSettings {
        CompressSettings {
            ring_bits: match self.quant {
                RingQuant::Int8 => Some(Bits::Eight),
                RingQuant::Int4 => Some(Bits::Four),
                RingQuant::None => None,
            },
            block: self.block(),
            f16_scales: self.scale_dtype == ScaleDtype::F16,
            ring_prune: self.prune_ring,
            unshared_int8: self.quant_unshared == UnsharedQuant::Int8,
        }
    }

    /// The pruning of the materialised model.
    pub fn pruning(&self) -> WeightPruning {
        WeightPruning {
            fraction: self.prune,
            scope: self.prune_scope,
            channels: self.prune_channels,
            channel_scope: self.channel_scope,
            channel_round_to: self.channel_round_to,
            finetune_epochs: self.finetune_epochs,
            finetune_lr: self.finetune_lr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_round_trips_through_json_by_its_keys() {
        let config = CompressConfig {
            quant: RingQuant::Int4,
            prune_scope: PruneScope::Layer,
            ..CompressConfig::default()
        };
        let json = serde_json::to_value(config.resolved()).unwrap();
        assert_eq!(json["quant"], "int4");
        assert_eq!(json["block"], 64);
        assert_eq!(json["prune_scope"], "layer");
        let back: CompressConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, config.resolved());
        assert!(serde_json::from_str::<CompressConfig>(r#"{"quant": "int3"}"#).is_err());
    }

    #[test]
    fn out_of_range_values_name_their_key() {
        let refused = |config: CompressConfig| match config.validate() {
            Err(Error::Config(crate::config::ConfigError::Setting(s))) => s.key,
            other => panic!("{other:?}"),
        };
        let d = CompressConfig::default;
        assert_eq!(refused(CompressConfig { prune: -0.5, ..d() }), "prune");
        assert_eq!(
            refused(CompressConfig {
                prune_ring: 1.0,
                ..d()
            }),
            "prune_ring"
        );
        assert_eq!(
            refused(CompressConfig {
                block: Some(0),
                ..d()
            }),
            "block"
        );
        assert_eq!(
            refused(CompressConfig {
                latency_runs: 0,
                ..d()
            }),
            "latency_runs"
        );
        assert_eq!(
            refused(CompressConfig {
                finetune_lr: f64::NAN,
                ..d()
            }),
            "finetune_lr"
        );
    }
}
