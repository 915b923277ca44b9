//! The zoo: name -> constructor and default input.

use candle_core::{ModuleT, Result};
use candle_nn::VarBuilder;

use crate::resnet::{BlockKind, Stem, resnet, resnet_cifar};
use crate::{ModelConfig, lenet, mlp};

/// A built model: train-mode aware forward.
pub type DynModel = Box<dyn ModuleT + Send + Sync>;

type Build = fn(&ModelConfig, VarBuilder<'_>) -> Result<DynModel>;

/// One model of the zoo.
#[derive(Debug)]
pub struct ModelEntry {
    /// Registry name.
    pub name: &'static str,
    /// One-line description.
    pub summary: &'static str,
    /// Default input channels.
    pub in_channels: usize,
    /// Default input height = width.
    pub image_size: usize,
    build: Build,
}

impl ModelEntry {
    /// This model's default config for `num_classes`.
    pub fn config(&self, num_classes: usize) -> ModelConfig {
        ModelConfig::new(self.name, num_classes, self.in_channels, self.image_size)
    }
}

macro_rules! boxed {
    ($e:expr) => {
        |cfg: &ModelConfig, vb: VarBuilder<'_>| -> Result<DynModel> { Ok(Box::new($e(cfg, vb)?)) }
    };
}

const R18: [usize; 4] = [2, 2, 2, 2];
const R34: [usize; 4] = [3, 4, 6, 3];
const IMAGENET_WIDTHS: [usize; 4] = [64, 128, 256, 512];

/// Every model, in display order.
pub static MODELS: &[ModelEntry] = &[
    ModelEntry {
        name: "mlp",
        summary: "MLP input-256-256-classes, ReLU",
        in_channels: 1,
        image_size: 28,
        build: boxed!(mlp::mlp),
    },
    ModelEntry {
        name: "lenet5",
        summary: "LeNet-5: conv 6-16 (5x5), fc 120-84",
        in_channels: 1,
        image_size: 28,
        build: boxed!(lenet::lenet5),
    },
    ModelEntry {
        name: "resnet20",
        summary: "CIFAR ResNet-20 (He et al.), 16/32/64 channels",
        in_channels: 3,
        image_size: 32,
        build: boxed!(|c, vb| resnet_cifar(c, 20, vb)),
    },
    ModelEntry {
        name: "resnet32",
        summary: "CIFAR ResNet-32",
        in_channels: 3,
        image_size: 32,
        build: boxed!(|c, vb| resnet_cifar(c, 32, vb)),
    },
    ModelEntry {
        name: "resnet44",
        summary: "CIFAR ResNet-44",
        in_channels: 3,
        image_size: 32,
        build: boxed!(|c, vb| resnet_cifar(c, 44, vb)),
    },
    ModelEntry {
        name: "resnet56",
        summary: "CIFAR ResNet-56",
        in_channels: 3,
        image_size: 32,
        build: boxed!(|c, vb| resnet_cifar(c, 56, vb)),
    },
    ModelEntry {
        name: "resnet110",
        summary: "CIFAR ResNet-110",
        in_channels: 3,
        image_size: 32,
        build: boxed!(|c, vb| resnet_cifar(c, 110, vb)),
    },
    ModelEntry {
        name: "resnet18",
        summary: "ImageNet ResNet-18 (torchvision)",
        in_channels: 3,
        image_size: 224,
        build: boxed!(|c, vb| resnet(
            c,
            BlockKind::Basic,
            Stem::ImageNet,
            &IMAGENET_WIDTHS,
            &R18,
            vb
        )),
    },
    ModelEntry {
        name: "resnet34",
        summary: "ImageNet ResNet-34 (torchvision)",
        in_channels: 3,
        image_size: 224,
        build: boxed!(|c, vb| resnet(
            c,
            BlockKind::Basic,
            Stem::ImageNet,
            &IMAGENET_WIDTHS,
            &R34,
            vb
        )),
    },
    ModelEntry {
        name: "resnet50",
        summary: "ImageNet ResNet-50 (torchvision, v1.5)",
        in_channels: 3,
        image_size: 224,
        build: boxed!(|c, vb| resnet(
            c,
            BlockKind::Bottleneck,
            Stem::ImageNet,
            &IMAGENET_WIDTHS,
            &R34,
            vb
        )),
    },
    ModelEntry {
        name: "resnet18_cifar",
        summary: "ResNet-18 with a 3x3 stride-1 stem, no max-pool",
        in_channels: 3,
        image_size: 32,
        build: boxed!(|c, vb| resnet(c, BlockKind::Basic, Stem::Cifar, &IMAGENET_WIDTHS, &R18, vb)),
    },
    ModelEntry {
        name: "resnet34_cifar",
        summary: "ResNet-34 with a CIFAR stem",
        in_channels: 3,
        image_size: 32,
        build: boxed!(|c, vb| resnet(c, BlockKind::Basic, Stem::Cifar, &IMAGENET_WIDTHS, &R34, vb)),
    },
    ModelEntry {
        name: "resnet50_cifar",
        summary: "ResNet-50 with a CIFAR stem",
        in_channels: 3,
        image_size: 32,
        build: boxed!(|c, vb| resnet(
            c,
            BlockKind::Bottleneck,
            Stem::Cifar,
            &IMAGENET_WIDTHS,
            &R34,
            vb
        )),
    },
];

/// The entry for `name`.
pub fn model_entry(name: &str) -> Result<&'static ModelEntry> {
    MODELS.iter().find(|m| m.name == name).ok_or_else(|| {
        let names: Vec<&str> = MODELS.iter().map(|m| m.name).collect();
        candle_core::Error::Msg(format!(
            "unknown model `{name}`: choose one of {}",
            names.join(", ")
        ))
    })
}

/// Builds the model a config names.
pub fn build_model(cfg: &ModelConfig, vb: VarBuilder<'_>) -> Result<DynModel> {
    (model_entry(&cfg.name)?.build)(cfg, vb)
}
