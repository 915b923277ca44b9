//! Handing a placement to another framework: each shared layer's ring
//! indices, signs and scale, as plain arrays (here written as little-endian
//! binary files and a JSON index), so that, for example, a PyTorch or CUDA
//! program can generate the weights with one gather,
//! `w = scale * sign * ring[index]`, and upload the indices to a GPU once.
//!
//! `cargo run -p rpg-core --example export_entries -- OUT_DIR`

use std::io::Write;

use rpg_core::{INDEX_MASK, LayerRegistry, Placement, RingSpec, SIGN_BIT};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "entries".into()));
    std::fs::create_dir_all(&out)?;
    // LeNet-5's shared layers (the paper's policy: first and last unshared).
    let mut registry = LayerRegistry::new();
    registry.push_unshared("conv1.weight", &[6, 1, 5, 5])?;
    registry.push_shared("conv2.weight", &[16, 6, 5, 5])?;
    registry.push_shared("fc1.weight", &[120, 400])?;
    registry.push_shared("fc2.weight", &[84, 120])?;
    registry.push_unshared("fc3.weight", &[10, 84])?;
    let placement = Placement::new(&RingSpec::global(5_935, 0), &registry)?;

    let mut index_json = Vec::new();
    for layer in placement.layers() {
        let entries = placement.layer_entries(layer);
        let index: Vec<u8> = entries
            .iter()
            .flat_map(|&e| (e & INDEX_MASK).to_le_bytes())
            .collect();
        let sign: Vec<u8> = entries
            .iter()
            .map(|&e| if e & SIGN_BIT != 0 { 0xff } else { 1 })
            .collect();
        std::fs::File::create(out.join(format!("{}.index.u32", layer.name)))?.write_all(&index)?;
        std::fs::File::create(out.join(format!("{}.sign.i8", layer.name)))?.write_all(&sign)?;
        index_json.push(format!(
            "{{\"name\": \"{}\", \"shape\": {:?}, \"group\": {}, \"scale\": {}}}",
            layer.name, layer.shape, layer.group, layer.scale
        ));
        println!(
            "{:<14} {:?}: {} entries, scale {:.4}",
            layer.name, layer.shape, layer.len, layer.scale
        );
    }
    std::fs::write(
        out.join("layers.json"),
        format!("[\n  {}\n]\n", index_json.join(",\n  ")),
    )?;
    println!("wrote {}", out.display());
    Ok(())
}
