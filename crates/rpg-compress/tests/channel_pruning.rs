//! Structured channel pruning on zoo models: the groups found from each
//! model's graph, and a pruned model computing what the original computes
//! with the removed channels silenced.

use std::collections::BTreeMap;

mod common;

use candle_core::{DType, Device, Tensor};
use common::{config, logits, weights};
use rpg_compress::{
    ChannelGroup, ChannelPruning, PruneScope, channel_groups, prune_channel_groups,
};
use rpg_models::{ModelConfig, build_model, onnx_model};
use rpg_nn::ParamStore;

fn groups_of(cfg: &ModelConfig) -> anyhow::Result<Vec<ChannelGroup>> {
    let store = ParamStore::dense(&Device::Cpu, DType::F32, 0);
    let model = build_model(cfg, store.var_builder())?;
    let onnx = onnx_model(model.as_ref(), cfg, &[])?;
    Ok(channel_groups(&onnx.graph.unwrap())?)
}

fn group_with<'a>(groups: &'a [ChannelGroup], layer: &str) -> &'a ChannelGroup {
    groups
        .iter()
        .find(|g| g.layers.iter().any(|l| l == layer))
        .unwrap_or_else(|| panic!("no group has {layer}: {groups:#?}"))
}

#[test]
fn groups_follow_residual_adds_and_depthwise_convs() -> anyhow::Result<()> {
    // ResNet-20: the stem and stage 1 share one residual stream; stages 2
    // and 3 start with projections, so each is its own; each block's inner
    // conv is a group alone; the classifier's outputs are the logits.
    let groups = groups_of(&config("resnet20", 8, 1.0))?;
    assert_eq!(groups.len(), 3 + 9, "{groups:#?}");
    let stage1 = group_with(&groups, "conv1");
    for layer in ["layer1.0.conv2", "layer1.1.conv2", "layer1.2.conv2"] {
        assert!(stage1.layers.iter().any(|l| l == layer), "{stage1:#?}");
    }
    assert!(
        stage1
            .members
            .iter()
            .any(|m| m.tensor == "layer2.0.downsample.0.weight" && m.axis == 1)
    );
    let stage3 = group_with(&groups, "layer3.0.downsample.0");
    assert_eq!((stage3.channels, stage3.producers.len()), (64, 4));
    assert!(
        stage3
            .members
            .iter()
            .any(|m| m.tensor == "fc.weight" && m.axis == 1)
    );
    assert_eq!(
        group_with(&groups, "layer2.1.conv1").layers,
        ["layer2.1.conv1"]
    );
    assert!(groups.iter().all(|g| !g.layers.iter().any(|l| l == "fc")));

    // LeNet-5: conv2's channels reach fc1 flattened, 5x5 inputs each at 28x28.
    let groups = groups_of(&config("lenet5", 28, 1.0))?;
    assert_eq!(groups.len(), 4);
    let conv2 = group_with(&groups, "conv2");
    assert!(
        conv2
            .members
            .iter()
            .any(|m| m.tensor == "fc1.weight" && m.per_channel == 25)
    );

    // MobileNetV2: the depthwise conv follows its expansion conv.
    let groups = groups_of(&config("mobilenet_v2", 32, 0.5))?;
    let expand = group_with(&groups, "features.2.conv.0.0");
    assert!(
        expand.layers.iter().any(|l| l == "features.2.conv.1.0"),
        "{expand:#?}"
    );

    // ViT: attention and layer norm are not followed, so the walk leaves
    // the residual stream whole rather than guessing.
    let groups = groups_of(&config("vit_tiny_cifar", 32, 1.0))?;
    assert!(
        groups
            .iter()
            .all(|g| !g.layers.iter().any(|l| l.contains("attn.qkv")))
    );
    Ok(())
}

/// Zeros the channels pruning removes in every tensor that writes them, so
/// the full model computes what the pruned one computes.
fn silence(
    tensors: &mut BTreeMap<String, Tensor>,
    groups: &[ChannelGroup],
    pruned: &BTreeMap<String, usize>,
    kept_of: impl Fn(&ChannelGroup) -> Vec<u32>,
) -> anyhow::Result<()> {
    for group in groups {
        if !group.layers.iter().any(|l| pruned.contains_key(l)) {
            continue;
        }
        let kept = kept_of(group);
        let mut mask = vec![0f32; group.channels];
        for &c in &kept {
            mask[c as usize] = 1.0;
        }
        for m in group.members.iter().filter(|m| m.axis == 0) {
            let t = &tensors[&m.tensor];
            let mut shape = vec![1; t.rank()];
            shape[0] = group.channels;
            let mask = Tensor::from_vec(mask.clone(), shape, &Device::Cpu)?;
            tensors.insert(m.tensor.clone(), t.broadcast_mul(&mask)?);
        }
    }
    Ok(())
}

/// The channels of `group` that survived: found by value, in order, in one
/// of its vectors (a bias or batch norm's scale, distinct per channel here).
fn survivors(
    group: &ChannelGroup,
    before: &BTreeMap<String, Tensor>,
    after: &BTreeMap<String, Tensor>,
) -> Vec<u32> {
    let vector = group
        .members
        .iter()
        .find(|m| before[&m.tensor].rank() == 1)
        .expect("a bias or norm in every group");
    let values = |t: &Tensor| t.to_vec1::<f32>().unwrap();
    let (b, a) = (
        values(&before[&vector.tensor]),
        values(&after[&vector.tensor]),
    );
    let mut kept = Vec::new();
    for (c, v) in b.iter().enumerate() {
        if a.get(kept.len()) == Some(v) {
            kept.push(c as u32);
        }
    }
    assert_eq!(
        kept.len(),
        a.len(),
        "{}: values not distinct",
        vector.tensor
    );
    kept
}

#[test]
fn pruned_models_compute_the_silenced_originals() -> anyhow::Result<()> {
    for (name, size, width, scope) in [
        ("resnet20", 8, 1.0, PruneScope::Layer),
        ("resnet20", 8, 1.0, PruneScope::Global),
        ("resnet18_cifar", 8, 0.25, PruneScope::Layer),
        ("resnet50_cifar", 8, 0.125, PruneScope::Global),
        ("mobilenet_v2", 32, 0.5, PruneScope::Layer),
        ("lenet5", 28, 1.0, PruneScope::Layer),
        ("mlp", 28, 1.0, PruneScope::Global),
    ] {
        let cfg = config(name, size, width);
        let groups = groups_of(&cfg)?;
        let original = weights(&cfg)?;
        let mut pruned = original.clone();
        let how = ChannelPruning {
            fraction: 0.5,
            scope,
            round_to: 1,
        };
        let channels = prune_channel_groups(&mut pruned, &groups, &how)?;
        let removed: usize = groups
            .iter()
            .map(|g| g.channels - channels[&g.layers[0]])
            .sum();
        let total: usize = groups.iter().map(|g| g.channels).sum();
        assert!(
            removed * 2 <= total && removed * 2 + 2 * groups.len() >= total,
            "{name}: removed {removed} of {total}"
        );
        let pruned_cfg = ModelConfig {
            channels: Some(channels.clone()),
            ..cfg.clone()
        };
        let mut silenced = original.clone();
        silence(&mut silenced, &groups, &channels, |g| {
            survivors(g, &original, &pruned)
        })?;
        let (want, got) = (logits(&cfg, &silenced)?, logits(&pruned_cfg, &pruned)?);
        let scale = want.iter().fold(1e-3f32, |m, v| m.max(v.abs()));
        for (w, g) in want.iter().zip(&got) {
            assert!(
                (w - g).abs() <= 1e-4 * scale,
                "{name} {scope}: {want:?} vs {got:?}"
            );
        }
        // Physically smaller: fewer parameters than the original.
        let count =
            |t: &BTreeMap<String, Tensor>| t.values().map(Tensor::elem_count).sum::<usize>();
        assert!(count(&pruned) < count(&original) * 7 / 10, "{name}");
    }
    Ok(())
}

#[test]
fn kept_channels_round_up_to_the_requested_multiple() -> anyhow::Result<()> {
    let cfg = config("resnet20", 8, 1.0);
    let groups = groups_of(&cfg)?;
    let mut tensors = weights(&cfg)?;
    let how = ChannelPruning {
        fraction: 0.75,
        scope: PruneScope::Layer,
        round_to: 8,
    };
    let channels = prune_channel_groups(&mut tensors, &groups, &how)?;
    assert_eq!(channels["conv1"], 8); // 16 -> 4, rounded up to 8
    assert_eq!(channels["layer3.0.conv2"], 16);
    assert!(channels.values().all(|c| c % 8 == 0));
    Ok(())
}
