//! A small RPG model trains: on a fixed synthetic batch, plain SGD on the
//! ring and the unshared parameters halves the loss within 50 steps.

mod common;

use candle_core::Module;

#[test]
fn loss_halves_in_fifty_steps() -> anyhow::Result<()> {
    let (store, model) = common::rpg_store(100, 5)?;
    let (x, y) = (common::batch()?, common::labels()?);
    let mut first = None;
    let mut last = f32::NAN;
    for _ in 0..50 {
        store.regenerate()?;
        let loss = candle_nn::loss::cross_entropy(&model.forward(&x)?, &y)?;
        last = loss.to_scalar::<f32>()?;
        first.get_or_insert(last);
        for rpg_nn::ParamGrad { var, grad, .. } in store.gradients(&loss.backward()?)? {
            var.set(&(var.as_tensor() - (grad * 0.05)?)?)?;
        }
    }
    let first = first.unwrap();
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    Ok(())
}

#[test]
fn half_precision_models_run_and_keep_an_f32_ring() -> anyhow::Result<()> {
    use candle_core::{DType, Device};
    use rpg_core::RingSpec;
    use rpg_nn::{ParamStore, SharingPolicy};

    let registry = common::registry(&SharingPolicy::paper())?;
    let store = ParamStore::rpg(
        registry,
        &RingSpec::global(100, 5),
        &Device::Cpu,
        DType::F16,
    )?;
    let model = common::build(store.var_builder())?;
    let x = common::batch()?.to_dtype(DType::F16)?;
    let logits = model.forward(&x)?;
    assert_eq!(logits.dtype(), DType::F16);
    let loss = logits.to_dtype(DType::F32)?.sqr()?.mean_all()?;
    let grads = store.gradients(&loss.backward()?)?;
    let rpg_nn::ParamGrad {
        name,
        group,
        var: ring,
        grad,
    } = &grads[0];
    assert_eq!(
        (name.as_str(), *group),
        (rpg_nn::RING_NAME, rpg_nn::ParamGroup::Ring)
    );
    assert_eq!((ring.dtype(), grad.dtype()), (DType::F32, DType::F32));
    assert!(grad.sqr()?.sum_all()?.to_scalar::<f32>()? > 0.0);
    Ok(())
}
