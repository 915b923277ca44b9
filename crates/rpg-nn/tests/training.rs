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
        for (_, var, grad) in store.gradients(&loss.backward()?)? {
            var.set(&(var.as_tensor() - (grad * 0.05)?)?)?;
        }
    }
    let first = first.unwrap();
    assert!(last < 0.5 * first, "loss {first} -> {last}");
    Ok(())
}
