//! Convolution throughput on the CPU: forward, input gradient and weight
//! gradient of rpg-kernels' native conv (each path timed on its own), forward and
//! forward+backward through Candle's graph for both rpg-kernels' and Candle's
//! stock conv, and a plain matrix product of the same (im2col'd) shape as the
//! ceiling. Throughput is
//! printed as elements/s where one element is one floating-point operation,
//! so "Gelem/s" reads as GFLOP/s.
//!
//! `cargo bench -p rpg-kernels --bench conv` (add `-- resnet20` to narrow).

use std::hint::black_box;

use candle_core::{Device, Tensor, Var};
use candle_nn::Conv2dConfig;
use criterion::{Criterion, Throughput};
use rpg_kernels::ops::conv2d;
use rpg_kernels::{KernelBackend, conv2d_input_grad, conv2d_weight_grad};

struct Shape {
    name: &'static str,
    batch: usize,
    channels_in: usize,
    channels_out: usize,
    size: usize,
    kernel: usize,
    stride: usize,
}

const SHAPES: &[Shape] = &[
    // ResNet-20's three stages at batch 128.
    Shape {
        name: "resnet20_16x32x32",
        batch: 128,
        channels_in: 16,
        channels_out: 16,
        size: 32,
        kernel: 3,
        stride: 1,
    },
    Shape {
        name: "resnet20_32x16x16",
        batch: 128,
        channels_in: 32,
        channels_out: 32,
        size: 16,
        kernel: 3,
        stride: 1,
    },
    Shape {
        name: "resnet20_64x8x8",
        batch: 128,
        channels_in: 64,
        channels_out: 64,
        size: 8,
        kernel: 3,
        stride: 1,
    },
    // The reference shape and ResNet-18-cifar's widest stage at batch 32.
    Shape {
        name: "3x3_64to64_b128_32x32",
        batch: 128,
        channels_in: 64,
        channels_out: 64,
        size: 32,
        kernel: 3,
        stride: 1,
    },
    Shape {
        name: "resnet18_128x16x16",
        batch: 32,
        channels_in: 128,
        channels_out: 128,
        size: 16,
        kernel: 3,
        stride: 1,
    },
    Shape {
        name: "resnet18_256x8x8",
        batch: 32,
        channels_in: 256,
        channels_out: 256,
        size: 8,
        kernel: 3,
        stride: 1,
    },
    Shape {
        name: "resnet18_512x4x4",
        batch: 32,
        channels_in: 512,
        channels_out: 512,
        size: 4,
        kernel: 3,
        stride: 1,
    },
];

fn bench_shape(c: &mut Criterion, s: &Shape) -> candle_core::Result<()> {
    let dev = Device::Cpu;
    let cfg = Conv2dConfig {
        padding: s.kernel / 2,
        stride: s.stride,
        ..Default::default()
    };
    let x = Var::randn(0f32, 1.0, (s.batch, s.channels_in, s.size, s.size), &dev)?;
    let w = Var::randn(
        0f32,
        0.1,
        (s.channels_out, s.channels_in, s.kernel, s.kernel),
        &dev,
    )?;
    let out = (s.size + 2 * cfg.padding - s.kernel) / s.stride + 1;
    let (m, n, k) = (
        s.batch * out * out,
        s.channels_out,
        s.channels_in * s.kernel * s.kernel,
    );
    let flops = 2 * m * n * k;

    let mut group = c.benchmark_group(s.name);
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_millis(500));
    group.measurement_time(std::time::Duration::from_secs(2));
    group.throughput(Throughput::Elements(flops as u64));

    // The ceiling: one matrix product with the conv's gemm dimensions.
    let a = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
    let b = Tensor::randn(0f32, 1.0, (k, n), &dev)?;
    group.bench_function("matmul_same_shape", |bench| {
        bench.iter(|| black_box(a.matmul(&b).unwrap()))
    });

    for (label, backend) in [
        ("native", KernelBackend::Native),
        ("candle", KernelBackend::Candle),
    ] {
        let _kernels = backend.scope();
        let y = conv2d(&x, &w, &cfg)?;
        let dy = Tensor::randn(0f32, 1.0, y.dims(), &dev)?;
        group.bench_function(format!("{label}_forward"), |bench| {
            bench.iter(|| black_box(conv2d(&x, &w, &cfg).unwrap()))
        });
        if backend == KernelBackend::Native {
            // Each backward path on its own, as the backward pass runs them.
            group.bench_function("native_input_grad", |bench| {
                bench.iter(|| black_box(conv2d_input_grad(&x, &w, &dy, &cfg).unwrap()))
            });
            group.bench_function("native_weight_grad", |bench| {
                bench.iter(|| black_box(conv2d_weight_grad(&x, &w, &dy, &cfg).unwrap()))
            });
        }
        // Forward and backward through Candle's graph (both gradients), as
        // in training: includes the graph's own elementwise work.
        group.throughput(Throughput::Elements(3 * flops as u64));
        group.bench_function(format!("{label}_forward_backward"), |bench| {
            bench.iter(|| {
                let y = conv2d(&x, &w, &cfg).unwrap();
                black_box((y * &dy).unwrap().sum_all().unwrap().backward().unwrap())
            })
        });
        group.throughput(Throughput::Elements(flops as u64));
    }
    group.finish();
    Ok(())
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    for s in SHAPES {
        bench_shape(&mut c, s).expect("conv bench");
    }
    c.final_summary();
}
