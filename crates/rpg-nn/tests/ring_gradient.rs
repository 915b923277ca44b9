//! The ring gradient equals (a) an independent signed, scaled scatter-add of
//! the generated weights' autograd gradients and (b) finite differences,
//! with duplicate indices inside one layer (ring of 10 for 216+1536 weights).

mod common;

use candle_core::{Module, Tensor};
use rpg_core::INDEX_MASK;
use rpg_nn::RING_NAME;

fn loss(model: &common::Tiny) -> candle_core::Result<Tensor> {
    candle_nn::loss::cross_entropy(&model.forward(&common::batch()?)?, &common::labels()?)
}

#[test]
fn ring_gradient_is_the_scatter_add_of_weight_gradients() -> anyhow::Result<()> {
    let (store, model) = common::rpg_store(10, 1)?;
    let placement = store.placement().unwrap().clone();
    // Duplicates inside a layer: more positions than ring entries.
    assert!(placement.layers().iter().all(|l| l.len > 10));
    let grads = loss(&model)?.backward()?;
    let ring_grad = store.gradients(&grads)?;
    assert_eq!(ring_grad[0].name, RING_NAME);
    assert_eq!(ring_grad[0].group, rpg_nn::ParamGroup::Ring);
    let ring_grad = ring_grad[0].grad.to_vec1::<f32>()?;

    // Independent f64 loop over the layers' own gradients.
    let mut want = [0f64; 10];
    for layer in placement.layers() {
        let var = store
            .var_builder()
            .get(layer.shape.as_slice(), &layer.name)?;
        let g = grads.get(&var).expect("generated weight has a gradient");
        for (k, gk) in g.flatten_all()?.to_vec1::<f32>()?.into_iter().enumerate() {
            let e = placement.layer_entries(layer)[k];
            let sign = if e & rpg_core::SIGN_BIT != 0 {
                -1.0
            } else {
                1.0
            };
            want[(e & INDEX_MASK) as usize] += f64::from(layer.scale) * sign * f64::from(gk);
        }
    }
    for (got, want) in ring_grad.iter().zip(want) {
        assert!(
            (f64::from(*got) - want).abs() <= 1e-5 * (1.0 + want.abs()),
            "{got} vs {want}"
        );
    }
    Ok(())
}

#[test]
fn ring_gradient_matches_finite_differences() -> anyhow::Result<()> {
    let (store, model) = common::rpg_store(10, 2)?;
    let grads = store.gradients(&loss(&model)?.backward()?)?;
    let analytic = grads[0].grad.to_vec1::<f32>()?;
    let ring = store.ring().unwrap().clone();
    let base = ring.as_tensor().to_vec1::<f32>()?;
    let eps = 1e-3f32;
    let eval = |values: &[f32]| -> anyhow::Result<f64> {
        ring.set(&Tensor::new(values, &candle_core::Device::Cpu)?)?;
        store.regenerate()?;
        Ok(f64::from(loss(&model)?.to_scalar::<f32>()?))
    };
    for j in 0..10 {
        let mut plus = base.clone();
        plus[j] += eps;
        let mut minus = base.clone();
        minus[j] -= eps;
        let numeric = (eval(&plus)? - eval(&minus)?) / (2.0 * f64::from(eps));
        let a = f64::from(analytic[j]);
        assert!(
            (numeric - a).abs() <= 2e-2 * a.abs().max(1e-2),
            "ring[{j}]: analytic {a}, numeric {numeric}"
        );
    }
    Ok(())
}

#[test]
fn every_trainable_tensor_gets_a_gradient() -> anyhow::Result<()> {
    let (store, model) = common::rpg_store(10, 3)?;
    let grads = store.gradients(&loss(&model)?.backward()?)?;
    let names: Vec<&str> = grads.iter().map(|g| g.name.as_str()).collect();
    let trainable: Vec<String> = store.trainable().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, trainable);
    assert!(names.contains(&"conv1.weight") && names.contains(&"fc2.bias"));
    for g in &grads {
        let norm = g.grad.sqr()?.sum_all()?.to_scalar::<f32>()?;
        assert!(norm > 0.0, "{} has a zero gradient", g.name);
    }
    Ok(())
}
