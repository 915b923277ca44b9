//! With N = T, the identity (sequential) placement, all signs +1 and unit
//! scale, an RPG model is its dense twin: same weights, same outputs.

mod common;

use candle_core::{DType, Device, Module};
use rpg_core::{PlacementKind, RingSpec, ScaleRule};
use rpg_nn::{ParamStore, RING_NAME, SharingPolicy};

#[test]
fn rpg_with_identity_placement_equals_dense() -> anyhow::Result<()> {
    let dense = ParamStore::dense(&Device::Cpu, DType::F32, 3);
    let dense_model = common::build(dense.var_builder())?;
    let dense_out = dense_model.forward(&common::batch()?)?;

    let registry = common::registry(&SharingPolicy::all_weights())?;
    let t = registry.shared_params() as usize;
    let spec = RingSpec::global(t, 0)
        .with_placement(PlacementKind::Sequential)
        .with_scale(ScaleRule::Unit);
    let rpg = ParamStore::rpg(registry.clone(), &spec, &Device::Cpu, DType::F32)?;
    let rpg_model = common::build(rpg.var_builder())?;

    // The ring is the dense weights concatenated in registry order.
    let weights = dense.materialize()?;
    let mut ring = Vec::with_capacity(t);
    for layer in registry.shared() {
        ring.extend(weights[&layer.name].flatten_all()?.to_vec1::<f32>()?);
    }
    let mut tensors = weights.clone();
    tensors.insert(
        RING_NAME.into(),
        candle_core::Tensor::from_vec(ring, t, &Device::Cpu)?,
    );
    rpg.assign(&tensors)?;

    let rpg_out = rpg_model.forward(&common::batch()?)?;
    let diff = (dense_out - rpg_out)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    assert_eq!(diff, 0.0);
    Ok(())
}
