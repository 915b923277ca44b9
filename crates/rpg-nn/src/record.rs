//! The recording pass: build a model once with a backend that only notes
//! which parameters it asks for, so the registry (and from it the ring
//! length for a DoF ratio) exists before any weight does.

use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::{Init, VarBuilder, var_builder::SimpleBackend};

use crate::policy::is_buffer;

/// One parameter request seen during recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    /// Full path, e.g. `layer1.0.conv1.weight`.
    pub name: String,
    /// Requested shape.
    pub shape: Vec<usize>,
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<Recorded>>,
}

struct RecordingBackend(Arc<Recorder>);

impl SimpleBackend for RecordingBackend {
    fn get(&self, s: Shape, name: &str, _h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut seen = self.0.seen.lock().expect("recorder lock");
        if let Some(prev) = seen.iter().find(|r| r.name == name) {
            if prev.shape != s.dims() {
                candle_core::bail!(
                    "parameter `{name}` requested twice with shapes {:?} and {:?}",
                    prev.shape,
                    s.dims()
                );
            }
        } else {
            seen.push(Recorded {
                name: name.to_string(),
                shape: s.dims().to_vec(),
            });
        }
        // A zero broadcast to the shape: nothing of the shape's size is
        // allocated, so recording a model (even one a corrupt file
        // describes as enormous) costs only its parameter list.
        Tensor::zeros((), dtype, dev)?.broadcast_as(s)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        candle_core::bail!("cannot record `{name}`: the model asked for a tensor without a shape")
    }

    fn contains_tensor(&self, _name: &str) -> bool {
        false
    }
}

/// Builds the model once on zeros and returns its trainable parameters in
/// request order (BatchNorm running statistics left out).
pub fn record_parameters<M>(
    build: impl FnOnce(VarBuilder<'_>) -> Result<M>,
) -> Result<Vec<(String, Vec<usize>)>> {
    let recorder = Arc::new(Recorder::default());
    let vb = VarBuilder::from_backend(
        Box::new(RecordingBackend(recorder.clone())),
        DType::F32,
        Device::Cpu,
    );
    build(vb)?;
    let seen = recorder.seen.lock().expect("recorder lock");
    Ok(seen
        .iter()
        .filter(|r| !is_buffer(&r.name))
        .map(|r| (r.name.clone(), r.shape.clone()))
        .collect())
}
