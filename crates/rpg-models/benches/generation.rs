//! How much of a CPU training step RPG's weight generation and ring-gradient
//! scatter-add cost, for ResNet-20 (batch 128) and ResNet-18-cifar (batch 32)
//! at 10% DoF. Criterion times the two RPG parts; a full step (regenerate,
//! forward, backward, ring gradient) is timed as a median of a few runs, and
//! the share is printed.
//!
//! `cargo bench -p rpg-models --bench generation` (add `-- resnet20` for one model).

use std::hint::black_box;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use criterion::Criterion;
use rpg_core::{RingSpec, ring_lengths_for_ratio};
use rpg_models::{build_model, model_entry};
use rpg_nn::{ParamStore, SharingPolicy, record_parameters};

struct Case {
    name: &'static str,
    batch: usize,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn run_case(c: &mut Criterion, case: &Case) -> anyhow::Result<()> {
    let cfg = model_entry(case.name)?.config(10);
    let registry =
        SharingPolicy::paper().registry(&record_parameters(|vb| build_model(&cfg, vb))?)?;
    let lengths = ring_lengths_for_ratio(&registry, 0.1)?;
    let spec = RingSpec {
        ring_lengths: lengths,
        ..RingSpec::global(1, 0)
    };
    let store = ParamStore::rpg(registry, &spec, &Device::Cpu, DType::F32)?;
    let model = build_model(&cfg, store.var_builder())?;
    let x = Tensor::randn(0f32, 1.0, (case.batch, 3, 32, 32), &Device::Cpu)?;
    let y = Tensor::from_vec(
        (0..case.batch as u32).map(|i| i % 10).collect::<Vec<_>>(),
        case.batch,
        &Device::Cpu,
    )?;
    let loss = || -> candle_core::Result<Tensor> {
        candle_nn::loss::cross_entropy(&model.forward_t(&x, true)?, &y)
    };
    let grads = loss()?.backward()?;

    let mut group = c.benchmark_group(case.name);
    group.sample_size(10);
    group.bench_function("regenerate", |b| b.iter(|| store.regenerate().unwrap()));
    group.bench_function("ring_gradient", |b| {
        b.iter(|| black_box(store.gradients(&grads).unwrap()))
    });
    group.finish();

    // The same two parts and a whole step, timed side by side.
    let (mut generate, mut acc, mut step) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        let t0 = Instant::now();
        store.regenerate()?;
        let t1 = Instant::now();
        let grads = loss()?.backward()?;
        let t2 = Instant::now();
        black_box(store.gradients(&grads)?);
        let t3 = Instant::now();
        generate.push((t1 - t0).as_secs_f64());
        acc.push((t3 - t2).as_secs_f64());
        step.push((t3 - t0).as_secs_f64());
    }
    let (generate, acc, step) = (median(generate), median(acc), median(step));
    println!(
        "{} batch {}: T = {} generated weights, ring {}; step {:.3} s, regenerate {:.2} ms, ring gradient {:.2} ms, RPG share {:.2}%",
        case.name,
        case.batch,
        store.placement().unwrap().shared_len(),
        store.placement().unwrap().ring_lengths()[0],
        step,
        generate * 1e3,
        acc * 1e3,
        100.0 * (generate + acc) / step
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let mut c = Criterion::default().configure_from_args();
    for case in [
        Case {
            name: "resnet20",
            batch: 128,
        },
        Case {
            name: "resnet18_cifar",
            batch: 32,
        },
    ] {
        if filter.as_deref().is_none_or(|f| case.name.contains(f)) {
            run_case(&mut c, &case)?;
        }
    }
    c.final_summary();
    Ok(())
}
