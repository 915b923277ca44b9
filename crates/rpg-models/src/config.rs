//! What a model is built from: name, classes, input shape, width.

use std::collections::BTreeMap;

/// Configuration of a zoo model. Stored (as JSON) in every model file, so a
/// checkpoint is only ever loaded into the model it was trained as.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelConfig {
    /// Registry name, e.g. `lenet5`.
    pub name: String,
    /// Output classes.
    pub num_classes: usize,
    /// Input channels.
    pub in_channels: usize,
    /// Input height = width.
    pub image_size: usize,
    /// Channel / hidden-size multiplier (1.0 = the published model); used to
    /// make narrower dense baselines with a given parameter count.
    pub width: f64,
    /// Explicit output widths of LeNet-5's and the MLP's layers in order,
    /// as structured pruning wrote them before [`ModelConfig::channels`];
    /// read so that those files still load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub widths: Option<Vec<usize>>,
    /// Output channels by layer name (`layer1.0.conv1`), set by structured
    /// pruning for the layers it narrowed. Overrides `width` and `widths`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<BTreeMap<String, usize>>,
    /// How input pixels in [0, 1] were normalised in training, per channel;
    /// evaluation and prediction use the same. Absent in files written
    /// before it was recorded (their data set's own normalisation applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<Normalize>,
    /// Class names by label, where the training data set has them
    /// (CIFAR-10, image folders): what `rpg predict` prints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_names: Option<Vec<String>>,
}

/// Per-channel input normalisation: `(pixel - mean) / std`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Normalize {
    /// One mean per input channel.
    pub mean: Vec<f32>,
    /// One standard deviation per input channel.
    pub std: Vec<f32>,
}

impl ModelConfig {
    /// A config with width 1.
    pub fn new(name: &str, num_classes: usize, in_channels: usize, image_size: usize) -> Self {
        Self {
            name: name.to_string(),
            num_classes,
            in_channels,
            image_size,
            width: 1.0,
            widths: None,
            channels: None,
            normalize: None,
            class_names: None,
        }
    }

    /// The same config at another width.
    pub fn with_width(mut self, width: f64) -> Self {
        self.width = width;
        self
    }

    /// `round(channels * width)`, at least 1.
    pub fn scaled(&self, channels: usize) -> usize {
        ((channels as f64 * self.width).round() as usize).max(1)
    }

    /// Output width of prunable layer `index`: the explicit width when set,
    /// else `default` scaled by `width`.
    pub fn layer_width(&self, index: usize, default: usize) -> usize {
        match &self.widths {
            Some(w) => w
                .get(index)
                .copied()
                .unwrap_or_else(|| self.scaled(default)),
            None => self.scaled(default),
        }
    }

    /// Output channels of the layer called `layer`: its pruned count when
    /// structured pruning narrowed it, else `default` (already scaled).
    pub fn out_channels(&self, layer: &str, default: usize) -> usize {
        self.channels
            .as_ref()
            .and_then(|c| c.get(layer).copied())
            .unwrap_or(default)
    }

    /// The JSON stored in model files.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("config serialises")
    }
}
