//! Per-layer conv timings of ResNet-18-cifar (batch 32) and ResNet-20:
//! forward, input gradient and weight gradient of every distinct conv
//! shape, each the best of five calls, with GFLOP/s counted as the direct
//! conv's 2 flops per multiply-add (so Winograd's paths can exceed the
//! machine's matrix-product rate), and the sum over ResNet-18's layers.
//!
//! `cargo run --release -p rpg-kernels --example conv_layers [-- FILTER]`:
//! FILTER keeps the layers whose name contains it (`512-512`, `r20`);
//! `gemm` times plain matrix products instead, the ceiling of the gemm
//! paths. `BATCH=128` sets the batch (ResNet-20 trains at 128).
//!
//! This machine's speed drifts by 20% or more within minutes, so compare
//! two builds by running them alternately, not against a figure from
//! earlier.

use std::time::Instant;

use candle_core::{Device, Result, Tensor};
use candle_nn::Conv2dConfig;
use rpg_kernels::ops::conv2d;
use rpg_kernels::{conv2d_input_grad, conv2d_weight_grad};

/// (name, layers of this shape in the model, in, out, map size, kernel, stride).
const LAYERS: &[(&str, usize, usize, usize, usize, usize, usize)] = &[
    ("r18 conv1 3-64 32", 1, 3, 64, 32, 3, 1),
    ("r18 64-64 32", 4, 64, 64, 32, 3, 1),
    ("r18 64-128 s2", 1, 64, 128, 32, 3, 2),
    ("r18 1x1 64-128 s2", 1, 64, 128, 32, 1, 2),
    ("r18 128-128 16", 3, 128, 128, 16, 3, 1),
    ("r18 128-256 s2", 1, 128, 256, 16, 3, 2),
    ("r18 1x1 128-256 s2", 1, 128, 256, 16, 1, 2),
    ("r18 256-256 8", 3, 256, 256, 8, 3, 1),
    ("r18 256-512 s2", 1, 256, 512, 8, 3, 2),
    ("r18 1x1 256-512 s2", 1, 256, 512, 8, 1, 2),
    ("r18 512-512 4", 3, 512, 512, 4, 3, 1),
    ("r20 16-16 32", 6, 16, 16, 32, 3, 1),
    ("r20 32-32 16", 5, 32, 32, 16, 3, 1),
    ("r20 64-64 8", 5, 64, 64, 8, 3, 1),
];

/// The best of five timed calls after one warm-up, in milliseconds.
fn best(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    let mut best = f64::MAX;
    for _ in 0..5 {
        let start = Instant::now();
        f()?;
        best = best.min(start.elapsed().as_secs_f64());
    }
    Ok(best * 1e3)
}

fn products(dev: &Device) -> Result<()> {
    for (m, k, n) in [(512, 4608, 512), (512, 4608, 128), (1024, 1024, 1024)] {
        let a = Tensor::randn(0f32, 1.0, (m, k), dev)?;
        let b = Tensor::randn(0f32, 1.0, (k, n), dev)?;
        let ms = best(|| a.matmul(&b).map(drop))?;
        let rate = 2.0 * (m * k * n) as f64 / ms / 1e6;
        println!("matmul {m}x{k}x{n}: {ms:.2} ms, {rate:.0} GFLOP/s");
    }
    Ok(())
}

fn main() -> Result<()> {
    let dev = Device::Cpu;
    let filter = std::env::args().nth(1).unwrap_or_default();
    if filter == "gemm" {
        return products(&dev);
    }
    let batch: usize = match std::env::var("BATCH") {
        Err(_) => 32,
        Ok(v) => v.parse().ok().filter(|&b| b > 0).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "BATCH={v:?} is not a batch size: set it to a whole number above 0, or unset it for 32"
            ))
        })?,
    };
    let mut total = [0f64; 3];
    for &(name, count, cin, cout, size, k, stride) in LAYERS {
        if !name.contains(&filter) {
            continue;
        }
        let cfg = Conv2dConfig {
            padding: k / 2,
            stride,
            ..Default::default()
        };
        let x = Tensor::randn(0f32, 1.0, (batch, cin, size, size), &dev)?;
        let w = Tensor::randn(0f32, 0.1, (cout, cin, k, k), &dev)?;
        let y = conv2d(&x, &w, &cfg)?;
        let dy = Tensor::randn(0f32, 1.0, y.dims(), &dev)?;
        let forward = best(|| conv2d(&x, &w, &cfg).map(drop))?;
        let input_grad = best(|| conv2d_input_grad(&x, &w, &dy, &cfg).map(drop))?;
        let weight_grad = best(|| conv2d_weight_grad(&x, &w, &dy, &cfg).map(drop))?;
        let out = y.dims()[2];
        let gflop = 2.0 * (batch * out * out * cout * cin * k * k) as f64 / 1e9;
        let rate = |ms: f64| gflop / ms * 1e3;
        println!(
            "{name:20} x{count}: forward {forward:6.2} ms ({:4.0}), input grad {input_grad:6.2} ({:4.0}), weight grad {weight_grad:6.2} ({:4.0})",
            rate(forward),
            rate(input_grad),
            rate(weight_grad)
        );
        if name.starts_with("r18") {
            for (t, ms) in total.iter_mut().zip([forward, input_grad, weight_grad]) {
                *t += count as f64 * ms;
            }
        }
    }
    let [f, i, w] = total;
    println!(
        "ResNet-18 layers above, summed: forward {f:.1}, input grad {i:.1}, weight grad {w:.1}, all {:.1} ms",
        f + i + w
    );
    Ok(())
}
