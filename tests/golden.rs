//! Golden vectors: placement version 1 must reproduce, entry for entry, what
//! the independent Python reference (`tests/data/placement_reference.py`,
//! written from `docs/format.md`) computed. A failure here means saved models
//! would silently become different networks: fix the code, never the file.

use anyhow::{Context, Result, ensure};
use rpg_core::{LayerInfo, LayerRegistry, Placement, PlacementKind, RingSpec, ScaleRule};
use serde_json::Value;

fn registry(value: &Value) -> Result<LayerRegistry> {
    let mut registry = LayerRegistry::new();
    for layer in value.as_array().context("registry is an array")? {
        registry.push(LayerInfo {
            name: layer["name"].as_str().context("name")?.to_string(),
            shape: serde_json::from_value(layer["shape"].clone())?,
            shared: layer["shared"].as_bool().context("shared")?,
            group: layer["group"].as_u64().context("group")? as usize,
        })?;
    }
    Ok(registry)
}

#[test]
fn placement_v1_matches_the_reference_implementation() -> Result<()> {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/placement_golden.json"
    ))?;
    let golden: Value = serde_json::from_str(&text)?;
    assert_eq!(golden["placement_version"], 1);
    let cases = golden["cases"].as_array().context("cases")?;
    assert!(cases.len() >= 50, "golden file has {} cases", cases.len());
    for case in cases {
        let registry = registry(&golden["registries"][case["registry"].as_str().unwrap()])?;
        let spec = RingSpec {
            ring_lengths: serde_json::from_value(case["ring_lengths"].clone())?,
            seed: case["seed"].as_u64().context("seed")?,
            ..RingSpec::global(1, 0)
        }
        // The reference implementation scales by the largest fan-out.
        .with_scale(ScaleRule::LargestFanOut)
        .with_placement(
            case["placement"]
                .as_str()
                .unwrap()
                .parse::<PlacementKind>()?,
        );
        let placement = Placement::new(&spec, &registry)?;
        let layers = case["layers"].as_array().context("layers")?;
        assert_eq!(layers.len(), placement.layers().len());
        for (want, got) in layers.iter().zip(placement.layers()) {
            let label = format!("{case}: layer {}", got.name);
            ensure!(want["name"] == got.name.as_str(), "{label}: order");
            let entries: Vec<u32> = serde_json::from_value(want["entries"].clone())?;
            ensure!(
                entries == placement.layer_entries(got),
                "{label}: entries differ"
            );
            let scale = want["scale"].as_f64().context("scale")?;
            ensure!(
                (scale as f32 - got.scale).abs() <= 1e-6 * scale as f32,
                "{label}: scale"
            );
        }
    }
    Ok(())
}
