//! Generation and the ring gradient on the device tables (what a GPU runs)
//! against rpg-core's host kernels, both on the CPU: the same weights bit
//! for bit, the same ring gradient within 1e-6 relative, the same training.

mod common;

use candle_core::{Module, Tensor};
use rpg_nn::{GenerationPath, ParamGroup};

fn weights(store: &rpg_nn::ParamStore) -> anyhow::Result<Vec<(String, Vec<u32>)>> {
    Ok(store
        .materialize()?
        .into_iter()
        .map(|(n, t)| {
            let bits = t.flatten_all()?.to_vec1::<f32>()?;
            Ok((n, bits.iter().map(|v| v.to_bits()).collect()))
        })
        .collect::<candle_core::Result<_>>()?)
}

#[test]
fn device_tables_generate_the_host_kernels_weights_and_ring_gradient() -> anyhow::Result<()> {
    let (host, host_model) = common::rpg_store_with(40, 3, GenerationPath::HostKernels)?;
    let (device, device_model) = common::rpg_store_with(40, 3, GenerationPath::DeviceTables)?;
    assert_eq!(device.generation_path(), Some(GenerationPath::DeviceTables));
    assert_eq!(weights(&host)?, weights(&device)?);

    let loss = |model: &common::Tiny| -> candle_core::Result<Tensor> {
        candle_nn::loss::cross_entropy(&model.forward(&common::batch()?)?, &common::labels()?)
    };
    let g_host = host.gradients(&loss(&host_model)?.backward()?)?;
    let g_device = device.gradients(&loss(&device_model)?.backward()?)?;
    assert_eq!(g_host.len(), g_device.len());
    for (a, b) in g_host.iter().zip(&g_device) {
        assert_eq!((&a.name, a.group), (&b.name, b.group));
        let (a, b) = (flat(&a.grad)?, flat(&b.grad)?);
        for (x, y) in a.iter().zip(&b) {
            assert!((x - y).abs() <= 1e-6 * (1.0 + x.abs()), "{x} vs {y}");
        }
    }
    assert_eq!(g_device[0].group, ParamGroup::Ring);
    Ok(())
}

#[test]
fn training_on_the_device_tables_follows_the_host_kernels() -> anyhow::Result<()> {
    let mut losses = Vec::new();
    for path in [GenerationPath::HostKernels, GenerationPath::DeviceTables] {
        let (store, model) = common::rpg_store_with(40, 5, path)?;
        let mut last = Vec::new();
        for _ in 0..10 {
            store.regenerate()?;
            let loss = candle_nn::loss::cross_entropy(
                &model.forward(&common::batch()?)?,
                &common::labels()?,
            )?;
            last.push(loss.to_scalar::<f32>()?);
            for g in store.gradients(&loss.backward()?)? {
                g.var.set(&(g.var.as_tensor() - (g.grad * 0.1)?)?)?;
            }
        }
        losses.push(last);
    }
    for (a, b) in losses[0].iter().zip(&losses[1]) {
        assert!((a - b).abs() <= 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
    }
    assert!(losses[1][9] < losses[1][0], "{:?}", losses[1]);
    Ok(())
}

fn flat(t: &Tensor) -> candle_core::Result<Vec<f32>> {
    t.flatten_all()?.to_vec1::<f32>()
}
