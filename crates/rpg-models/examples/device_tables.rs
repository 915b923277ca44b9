//! Device memory of RPG's device tables (`rpg_nn::DevicePlacement`) for the
//! bench models at 10% DoF with the paper's sharing: the figures of
//! docs/dev/benchmarks.md.
//!
//! `cargo run --release -p rpg-models --example device_tables`

use candle_core::{DType, Device};
use rpg_core::{RingSpec, ring_lengths_for_ratio};
use rpg_models::{build_model, model_entry};
use rpg_nn::{GenerationPath, ParamStore, record_parameters};

fn main() -> anyhow::Result<()> {
    println!("model            shared weights    ring  width  tables");
    for name in ["mlp", "lenet5", "resnet20", "resnet18_cifar"] {
        let entry = model_entry(name)?;
        let cfg = entry.config(10);
        let registry = entry
            .sharing_policy()
            .registry(&record_parameters(|vb| build_model(&cfg, vb))?)?;
        let spec = RingSpec {
            ring_lengths: ring_lengths_for_ratio(&registry, 0.1)?,
            ..RingSpec::global(1, 0)
        };
        let store = ParamStore::rpg_with(
            registry,
            &spec,
            &Device::Cpu,
            DType::F32,
            GenerationPath::DeviceTables,
        )?;
        let tables = store
            .device_placement()
            .expect("built on the device tables");
        println!(
            "{name:<16} {:>14} {:>7} {:>6} {:>7.1} MiB",
            tables.shared_len(),
            spec.ring_dof(),
            tables.width(),
            tables.table_bytes() as f64 / (1024.0 * 1024.0)
        );
    }
    Ok(())
}
