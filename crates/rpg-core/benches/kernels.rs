//! Generation and scatter-add at ResNet-18 scale (T = 11,157,504 shared
//! weights, N = 2,359,296 ring entries) against a plain memcpy of the same
//! output size. Run: `cargo bench -p rpg-core --bench kernels`.

use std::hint::black_box;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use rpg_core::{LayerRegistry, Placement, RingSpec};

const RING: usize = 2_359_296;

/// The shared convs of torchvision's ResNet-18 (stem and classifier excluded).
fn resnet18_registry() -> LayerRegistry {
    let mut r = LayerRegistry::new();
    let mut push = |name: String, shape: [usize; 4]| r.push_shared(name, &shape).unwrap();
    let widths = [64, 128, 256, 512];
    let mut in_ch = 64;
    for (stage, &w) in widths.iter().enumerate() {
        for block in 0..2 {
            let first_in = if block == 0 { in_ch } else { w };
            push(
                format!("layer{}.{block}.conv1.weight", stage + 1),
                [w, first_in, 3, 3],
            );
            push(
                format!("layer{}.{block}.conv2.weight", stage + 1),
                [w, w, 3, 3],
            );
            if block == 0 && stage > 0 {
                push(
                    format!("layer{}.0.downsample.0.weight", stage + 1),
                    [w, in_ch, 1, 1],
                );
            }
        }
        in_ch = w;
    }
    r
}

struct Fixture {
    placement: Placement,
    ring: Vec<f32>,
    out: Vec<f32>,
    grad: Vec<f32>,
    ring_grad: Vec<f32>,
    src: Vec<f32>,
}

fn fixture() -> Fixture {
    let registry = resnet18_registry();
    assert_eq!(registry.shared_params(), 11_157_504);
    let placement = Placement::new(&RingSpec::global(RING, 0), &registry).unwrap();
    let t = placement.shared_len();
    Fixture {
        placement,
        ring: (0..RING).map(|j| (j as f32 * 1e-3).sin()).collect(),
        out: vec![0.0; t],
        grad: (0..t).map(|k| (k as f32 * 1e-3).cos()).collect(),
        ring_grad: vec![0.0; RING],
        src: vec![1.0; t],
    }
}

fn bench(c: &mut Criterion, f: &mut Fixture) {
    let bytes = (f.placement.shared_len() * 4) as u64;
    let mut group = c.benchmark_group("resnet18_scale");
    group.throughput(Throughput::Bytes(bytes)).sample_size(20);
    group.bench_function("memcpy", |b| {
        b.iter(|| f.out.copy_from_slice(black_box(&f.src)))
    });
    group.bench_function("generate", |b| {
        b.iter(|| {
            f.placement
                .generate(&[&f.ring[..]], black_box(&mut f.out))
                .unwrap()
        })
    });
    group.bench_function("accumulate", |b| {
        b.iter(|| {
            f.placement
                .accumulate(black_box(&f.grad), &mut [&mut f.ring_grad[..]])
                .unwrap()
        })
    });
    group.finish();
}

fn median_seconds(mut run: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Prints bytes/s of each kernel beside memcpy, and the ratio.
fn summary(f: &mut Fixture) {
    let gb = (f.placement.shared_len() * 4) as f64 / 1e9;
    let memcpy = median_seconds(|| f.out.copy_from_slice(black_box(&f.src)));
    let generate = median_seconds(|| f.placement.generate(&[&f.ring[..]], &mut f.out).unwrap());
    let accumulate = median_seconds(|| {
        f.placement
            .accumulate(&f.grad, &mut [&mut f.ring_grad[..]])
            .unwrap()
    });
    println!(
        "\nsummary (median of 15, output {:.1} MB, {} threads):",
        gb * 1e3,
        rpg_core::kernels::thread_count()
    );
    println!(
        "  memcpy      {:7.2} GB/s  ({:.2} ms)",
        gb / memcpy,
        memcpy * 1e3
    );
    for (name, t) in [("generate", generate), ("accumulate", accumulate)] {
        println!(
            "  {name:<11} {:7.2} GB/s  ({:.2} ms)  ratio to memcpy {:.2}",
            gb / t,
            t * 1e3,
            memcpy / t
        );
    }
}

fn main() {
    let mut f = fixture();
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &mut f);
    c.final_summary();
    summary(&mut f);
}
