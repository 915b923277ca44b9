//! Training with rpg-core alone, no tensor framework: a linear model
//! `y = W x` with `W` (4 x 16, 64 weights) generated from a ring of 8
//! entries, fitted by gradient descent to a target that is itself an RPG
//! matrix. The forward pass uses the generated weights; the backward pass
//! turns dL/dW into dL/dring with `accumulate`.
//!
//! `cargo run -p rpg-core --example toy_training`

use rpg_core::{LayerRegistry, Placement, RingSpec};

fn main() -> rpg_core::Result<()> {
    let (outputs, inputs) = (4usize, 16usize);
    let mut registry = LayerRegistry::new();
    registry.push_shared("w", &[outputs, inputs])?;
    let placement = Placement::new(&RingSpec::global(8, 7), &registry)?;

    // A target matrix the model can represent exactly.
    let target_ring: Vec<f32> = (0..8).map(|i| (i as f32 - 3.5) / 4.0).collect();
    let mut target = vec![0f32; placement.shared_len()];
    placement.generate(&[&target_ring], &mut target)?;

    // Inputs: 32 fixed pseudo-random vectors.
    let xs: Vec<Vec<f32>> = (0..32)
        .map(|n| {
            (0..inputs)
                .map(|i| (((n * 31 + i * 17) % 23) as f32 / 11.0) - 1.0)
                .collect()
        })
        .collect();
    let matvec = |w: &[f32], x: &[f32]| -> Vec<f32> {
        (0..outputs)
            .map(|o| (0..inputs).map(|i| w[o * inputs + i] * x[i]).sum())
            .collect()
    };

    let mut ring = vec![0f32; 8];
    let mut w = vec![0f32; placement.shared_len()];
    for step in 0..=200 {
        placement.generate(&[&ring], &mut w)?;
        // Mean squared error over the batch, and dL/dW.
        let mut loss = 0f32;
        let mut grad_w = vec![0f32; w.len()];
        for x in &xs {
            let (y, want) = (matvec(&w, x), matvec(&target, x));
            for o in 0..outputs {
                let err = y[o] - want[o];
                loss += err * err / xs.len() as f32;
                for i in 0..inputs {
                    grad_w[o * inputs + i] += 2.0 * err * x[i] / xs.len() as f32;
                }
            }
        }
        // The ring's gradient: the signed, scaled scatter-add of dL/dW.
        let mut grad_ring = vec![0f32; ring.len()];
        placement.accumulate(&grad_w, &mut [&mut grad_ring[..]])?;
        for (r, g) in ring.iter_mut().zip(&grad_ring) {
            *r -= 0.02 * g;
        }
        if step % 50 == 0 {
            println!("step {step:>3}: loss {loss:.6}");
        }
    }
    println!("ring   {ring:.3?}");
    println!("target {target_ring:.3?}");
    Ok(())
}
