//! Batch-norm timings at ResNet-20's shapes (batch 128) and ResNet-18-cifar's
//! first stage (batch 32): the training forward with a ReLU, the residual
//! tail (normalise + add + ReLU), and each with its backward, the best of
//! seven calls after a warm-up.
//!
//! `cargo run --release -p rpg-kernels --example batch_norm_layers`.
//!
//! The backward is timed as forward + `backward()` of `sum(y * r)` with a
//! fixed `r`, less the forward and that loss's own backward on a plain
//! variable. Run it with `MALLOC_MMAP_MAX_=0
//! MALLOC_TRIM_THRESHOLD_=1073741824`, the allocator settings of `rpg`
//! (otherwise every fresh buffer's page faults are timed), and compare two
//! builds by running them alternately, not against a figure from earlier.

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rpg_kernels::batch_norm;

/// The best of seven timed calls after one warm-up, in milliseconds.
fn best(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::MAX;
    for _ in 0..7 {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best * 1e3)
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    for (name, shape) in [
        ("r20 16x32x32 b128", (128, 16, 32, 32)),
        ("r20 32x16x16 b128", (128, 32, 16, 16)),
        ("r20 64x8x8 b128", (128, 64, 8, 8)),
        ("r18 64x32x32 b32", (32, 64, 32, 32)),
    ] {
        let vars = VarMap::new();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, &dev);
        let bn = batch_norm(shape.1, 1e-5, vb)?;
        let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &dev)?)?;
        let shortcut = Var::from_tensor(&Tensor::randn(0f32, 1.0, shape, &dev)?)?;
        let r = Tensor::randn(0f32, 1.0, shape, &dev)?;
        let relu = best(|| bn.forward_relu_t(&x, true).map(drop))?;
        let relu_back = best(|| {
            let y = bn.forward_relu_t(&x, true)?;
            (y * &r)?.sum_all()?.backward().map(drop)
        })?;
        let tail = best(|| bn.forward_add_relu_t(&x, &shortcut, true).map(drop))?;
        let tail_back = best(|| {
            let y = bn.forward_add_relu_t(&x, &shortcut, true)?;
            (y * &r)?.sum_all()?.backward().map(drop)
        })?;
        // The loss's own backward, on a variable, for subtraction.
        let loss = best(|| (x.as_tensor() * &r)?.sum_all()?.backward().map(drop))?;
        let eval = best(|| bn.forward_relu_t(&x, false).map(drop))?;
        println!(
            "{name:18}: relu {relu:5.2} ms, backward {:5.2}; add+relu {tail:5.2}, backward {:5.2}; eval relu {eval:5.2}",
            relu_back - relu - loss,
            tail_back - tail - loss,
        );
    }
    Ok(())
}
