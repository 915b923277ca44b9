//! The zoo: name -> constructor and default input.

use candle_core::{ModuleT, Result};
use candle_nn::VarBuilder;
use rpg_nn::SharingPolicy;

use crate::onnx::ExportOnnx;
use crate::resnet::{BlockKind, Stem, resnet, resnet_cifar};
use crate::vit::{SMALL, TINY, VitShape, vit};
use crate::{ModelConfig, lenet, mlp, mobilenet};

/// What every zoo model is: a train-mode aware forward that can also write
/// itself as ONNX.
pub trait ZooModel: ModuleT + ExportOnnx + Send + Sync {}

impl<T: ModuleT + ExportOnnx + Send + Sync> ZooModel for T {}

/// A built model.
pub type DynModel = Box<dyn ZooModel>;

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
    /// Default sharing: `true` shares every weight matrix (small models, where
    /// the stem and classifier alone would exceed low DoF budgets); `false`
    /// follows the paper (all but the first layer and the classifier).
    pub share_all_weights: bool,
    build: Build,
}

impl ModelEntry {
    /// This model's default config for `num_classes`.
    pub fn config(&self, num_classes: usize) -> ModelConfig {
        ModelConfig::new(self.name, num_classes, self.in_channels, self.image_size)
    }

    /// This model's default sharing policy.
    pub fn sharing_policy(&self) -> SharingPolicy {
        if self.share_all_weights {
            SharingPolicy::all_weights()
        } else {
            SharingPolicy::paper()
        }
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
        share_all_weights: true,
        summary: "MLP input-256-256-classes, ReLU",
        in_channels: 1,
        image_size: 28,
        build: boxed!(mlp::mlp),
    },
    ModelEntry {
        name: "lenet5",
        share_all_weights: true,
        summary: "LeNet-5: conv 6-16 (5x5), fc 120-84",
        in_channels: 1,
        image_size: 28,
        build: boxed!(lenet::lenet5),
    },
    ModelEntry {
        name: "resnet20",
        share_all_weights: false,
        summary: "CIFAR ResNet-20 (He et al.), 16/32/64 channels",
        in_channels: 3,
        image_size: 32,
        build: boxed!(|c, vb| resnet_cifar(c, 20, vb)),
    },
    ModelEntry {
        name: "resnet32",
        share_all_weights: false,
        summary: "CIFAR ResNet-32",
        in_channels: 3,
        image_size: 32,
        build: boxed!(|c, vb| resnet_cifar(c, 32, vb)),
    },
    ModelEntry {
        name: "resnet44",
        share_all_weights: false,
        summary: "CIFAR ResNet-44",
        in_channels: 3,
        image_size: 32,
        build: boxed!(|c, vb| resnet_cifar(c, 44, vb)),
    },
    ModelEntry {
        name: "resnet56",
        share_all_weights: false,
        summary: "CIFAR ResNet-56",
        in_channels: 3,
        image_size: 32,
        build: boxed!(|c, vb| resnet_cifar(c, 56, vb)),
    },
    ModelEntry {
        name: "resnet110",
        share_all_weights: false,
        summary: "CIFAR ResNet-110",
        in_channels: 3,
        image_size: 32,
        build: boxed!(|c, vb| resnet_cifar(c, 110, vb)),
    },
    ModelEntry {
        name: "resnet18",
        share_all_weights: false,
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
        share_all_weights: false,
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
        share_all_weights: false,
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
        share_all_weights: false,
        summary: "ResNet-18 with a 3x3 stride-1 stem, no max-pool",
        in_channels: 3,
        image_size: 32,
        build: boxed!(|c, vb| resnet(c, BlockKind::Basic, Stem::Cifar, &IMAGENET_WIDTHS, &R18, vb)),
    },
    ModelEntry {
        name: "resnet34_cifar",
        share_all_weights: false,
        summary: "ResNet-34 with a CIFAR stem",
        in_channels: 3,
        image_size: 32,
        build: boxed!(|c, vb| resnet(c, BlockKind::Basic, Stem::Cifar, &IMAGENET_WIDTHS, &R34, vb)),
    },
    ModelEntry {
        name: "resnet50_cifar",
        share_all_weights: false,
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
    ModelEntry {
        name: "mobilenet_v2",
        summary: "MobileNetV2 (torchvision), width multiplier `width`",
        in_channels: 3,
        image_size: 224,
        share_all_weights: false,
        build: boxed!(mobilenet::mobilenet_v2),
    },
    ModelEntry {
        name: "vit_tiny",
        summary: "ViT-Tiny/16 (timm vit_tiny_patch16_224)",
        in_channels: 3,
        image_size: 224,
        share_all_weights: false,
        build: boxed!(|c, vb| vit(c, TINY, vb)),
    },
    ModelEntry {
        name: "vit_small",
        summary: "ViT-Small/16 (timm vit_small_patch16_224)",
        in_channels: 3,
        image_size: 224,
        share_all_weights: false,
        build: boxed!(|c, vb| vit(c, SMALL, vb)),
    },
    ModelEntry {
        name: "vit_tiny_cifar",
        summary: "ViT-Tiny with 4x4 patches for 32x32 input",
        in_channels: 3,
        image_size: 32,
        share_all_weights: false,
        build: boxed!(|c, vb| vit(c, VitShape { patch: 4, ..TINY }, vb)),
    },
    ModelEntry {
        name: "vit_small_cifar",
        summary: "ViT-Small with 4x4 patches for 32x32 input",
        in_channels: 3,
        image_size: 32,
        share_all_weights: false,
        build: boxed!(|c, vb| vit(c, VitShape { patch: 4, ..SMALL }, vb)),
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
