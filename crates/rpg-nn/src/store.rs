//! The parameter store behind a `VarBuilder`: dense or RPG.
//!
//! In RPG mode each shared weight is a persistent `Var` that the model is
//! built on once. [`ParamStore::regenerate`] refills each of them from the
//! ring in place (`rpg_core::Placement::generate_layer`, layers in
//! parallel); after `backward`, [`ParamStore::gradients`] turns their
//! gradients, read where they lie, into the ring gradient with one fused
//! scatter-add (`Placement::accumulate_layers`). The
//! generated Vars are never trained directly; the ring and the unshared
//! parameters are.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use candle_core::backprop::GradStore;
use candle_core::{
    CpuStorage, DType, Device, InplaceOp1, Result, Shape, Storage, Tensor, Var, bail,
};
use candle_nn::{Init, VarBuilder, var_builder::SimpleBackend};
use rpg_core::rng::{Pcg32, StreamPurpose};
use rpg_core::{DofReport, LayerRegistry, Placement, RingSpec};
use rpg_kernels::f32_slice;

use rayon::prelude::*;

use crate::device_placement::DevicePlacement;
use crate::grad::{ParamGrad, ParamGroup};
use crate::init::init_values;
use crate::mode::Mode;
use crate::model_file_error::TensorMismatch;
use crate::policy::is_buffer;

/// The name of the ring in gradients and files.
pub const RING_NAME: &str = "rpg.ring";

struct RpgState {
    registry: LayerRegistry,
    placement: Placement,
    /// All groups' rings concatenated, always f32 (the master copy).
    ring: Var,
    /// One Var per shared layer, in placement order.
    generated: Vec<Var>,
    /// The placement on the device, when generation runs there.
    tables: Option<DevicePlacement>,
}

/// Where generated weights and the ring gradient are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationPath {
    /// rpg-core's kernels, straight into each weight's CPU storage: the
    /// fastest on the CPU (f32 only).
    HostKernels,
    /// Gathers and row sums on the model's device ([`DevicePlacement`]):
    /// nothing goes through the host, so a GPU keeps RPG on the GPU.
    DeviceTables,
}

impl GenerationPath {
    /// The path for a device and dtype: host kernels for f32 on the CPU,
    /// device tables everywhere else.
    pub fn for_device(device: &Device, dtype: DType) -> Self {
        if device.is_cpu() && dtype == DType::F32 {
            GenerationPath::HostKernels
        } else {
            GenerationPath::DeviceTables
        }
    }
}

struct Inner {
    mode: Mode,
    device: Device,
    dtype: DType,
    seed: u64,
    vars: Mutex<BTreeMap<String, Var>>,
    rpg: Option<RpgState>,
}

/// Parameters of one model. Cheap to clone (shared handle).
#[derive(Clone)]
pub struct ParamStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ParamStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParamStore")
            .field("mode", &self.inner.mode)
            .field("device", &self.inner.device)
            .field("dtype", &self.inner.dtype)
            .finish_non_exhaustive()
    }
}

fn core_err(e: rpg_core::Error) -> candle_core::Error {
    candle_core::Error::wrap(e)
}

impl ParamStore {
    /// A dense store; parameters are created on first request with seeded
    /// initial values.
    pub fn dense(device: &Device, dtype: DType, seed: u64) -> Self {
        Self {
            inner: Arc::new(Inner {
                mode: Mode::Dense,
                device: device.clone(),
                dtype,
                seed,
                vars: Mutex::new(BTreeMap::new()),
                rpg: None,
            }),
        }
    }

    /// An RPG store for a recorded registry and a ring spec. The ring is
    /// initialised from `spec.seed` with the placement's init std; the
    /// generated weights are filled at once.
    pub fn rpg(
        registry: LayerRegistry,
        spec: &RingSpec,
        device: &Device,
        dtype: DType,
    ) -> Result<Self> {
        let path = GenerationPath::for_device(device, dtype);
        Self::rpg_with(registry, spec, device, dtype, path)
    }

    /// [`ParamStore::rpg`] with the generation path chosen by the caller
    /// (tests run the device tables on the CPU against the host kernels).
    pub fn rpg_with(
        registry: LayerRegistry,
        spec: &RingSpec,
        device: &Device,
        dtype: DType,
        path: GenerationPath,
    ) -> Result<Self> {
        if path == GenerationPath::HostKernels && path != GenerationPath::for_device(device, dtype)
        {
            bail!(
                "rpg-core's host kernels generate f32 weights on the CPU only, not {dtype:?} on {device:?}"
            )
        }
        let placement = Placement::new(spec, &registry).map_err(core_err)?;
        let tables = match path {
            GenerationPath::HostKernels => None,
            GenerationPath::DeviceTables => Some(DevicePlacement::new(&placement, device)?),
        };
        let std = placement.ring_init_std();
        let mut ring_values = Vec::with_capacity(spec.ring_dof() as usize);
        for (group, &len) in spec.ring_lengths.iter().enumerate() {
            let mut rng = Pcg32::for_stream(spec.seed, StreamPurpose::RingInit, group as u32);
            ring_values.extend((0..len).map(|_| std * rng.next_normal()));
        }
        let ring_len = ring_values.len();
        let ring = Var::from_vec(ring_values, ring_len, device)?;
        let generated = placement
            .layers()
            .iter()
            .map(|l| Var::zeros(l.shape.as_slice(), dtype, device))
            .collect::<Result<Vec<_>>>()?;
        let store = Self {
            inner: Arc::new(Inner {
                mode: Mode::Rpg,
                device: device.clone(),
                dtype,
                seed: spec.seed,
                vars: Mutex::new(BTreeMap::new()),
                rpg: Some(RpgState {
                    registry,
                    placement,
                    ring,
                    generated,
                    tables,
                }),
            }),
        };
        store.regenerate()?;
        Ok(store)
    }

    /// A `VarBuilder` over this store, for building the model.
    pub fn var_builder(&self) -> VarBuilder<'static> {
        VarBuilder::from_backend(
            Box::new(self.clone()),
            self.inner.dtype,
            self.inner.device.clone(),
        )
    }

    /// Dense or RPG.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// The device parameters live on.
    pub fn device(&self) -> &Device {
        &self.inner.device
    }

    /// The dtype of model parameters (the ring is always f32).
    pub fn dtype(&self) -> DType {
        self.inner.dtype
    }

    /// The seed of initialisation (and placement, in RPG mode).
    pub fn seed(&self) -> u64 {
        self.inner.seed
    }

    /// The placement (RPG mode).
    pub fn placement(&self) -> Option<&Placement> {
        self.inner.rpg.as_ref().map(|s| &s.placement)
    }

    /// The registry (RPG mode).
    pub fn registry(&self) -> Option<&LayerRegistry> {
        self.inner.rpg.as_ref().map(|s| &s.registry)
    }

    /// The ring Var (RPG mode): all groups concatenated.
    pub fn ring(&self) -> Option<&Var> {
        self.inner.rpg.as_ref().map(|s| &s.ring)
    }

    /// DoF figures (RPG mode).
    pub fn dof(&self) -> Option<DofReport> {
        let state = self.inner.rpg.as_ref()?;
        Some(DofReport::new(&state.registry, state.placement.spec()))
    }

    fn vars(&self) -> MutexGuard<'_, BTreeMap<String, Var>> {
        self.inner
            .vars
            .lock()
            .expect("parameter store lock poisoned")
    }

    /// Every persistent tensor except generated weights (unshared
    /// parameters and buffers), by name.
    pub fn persistent(&self) -> BTreeMap<String, Var> {
        self.vars().clone()
    }

    /// The parameters an optimizer updates: the ring (RPG mode) and every
    /// persistent tensor that is not a buffer.
    pub fn trainable(&self) -> Vec<(String, Var)> {
        let mut out: Vec<(String, Var)> = self
            .ring()
            .map(|r| (RING_NAME.to_string(), r.clone()))
            .into_iter()
            .collect();
        out.extend(
            self.vars()
                .iter()
                .filter(|(n, _)| !is_buffer(n))
                .map(|(n, v)| (n.clone(), v.clone())),
        );
        out
    }

    /// Refills every generated weight from the current ring: one fused
    /// generation over the whole placement. Call after each ring update
    /// (the trainer does so before every forward pass).
    pub fn regenerate(&self) -> Result<()> {
        let Some(state) = &self.inner.rpg else {
            return Ok(());
        };
        if let Some(tables) = &state.tables {
            // On the device: a gather per layer, nothing through the host.
            let ring = state.ring.as_tensor().detach();
            for (index, var) in state.generated.iter().enumerate() {
                let weights = tables
                    .generate(&ring, index)?
                    .reshape(var.shape())?
                    .to_dtype(self.inner.dtype)?;
                var.set(&weights)?;
            }
            return Ok(());
        }
        // Read in place: a copy of the ring would be a pass over it per step.
        let (ring_storage, ring_layout) = state.ring.as_tensor().storage_and_layout();
        let ring = cpu_f32(&ring_storage, ring_layout, "ring")?;
        let rings = split_rings(ring, state.placement.ring_lengths());
        // Straight into each Var's storage, no staging copy; layers in
        // parallel (rpg-core threads only layers large enough to pay).
        state
            .generated
            .par_iter()
            .enumerate()
            .try_for_each(|(index, var)| {
                let op = GenerateLayer {
                    placement: &state.placement,
                    index,
                    rings: &rings,
                };
                var.as_tensor().inplace_op1(&op)
            })
    }

    /// Where generation runs.
    pub fn generation_path(&self) -> Option<GenerationPath> {
        let state = self.inner.rpg.as_ref()?;
        Some(match state.tables {
            Some(_) => GenerationPath::DeviceTables,
            None => GenerationPath::HostKernels,
        })
    }

    /// The device tables, when generation runs on the device.
    pub fn device_placement(&self) -> Option<&DevicePlacement> {
        self.inner.rpg.as_ref()?.tables.as_ref()
    }

    /// Gradients of the trainable parameters from a `backward` result: the
    /// ring's is the fused signed, scaled scatter-add of the generated
    /// weights' gradients, read where they lie for f32 on the CPU.
    /// Parameters the loss does not reach are left out.
    pub fn gradients(&self, grads: &GradStore) -> Result<Vec<ParamGrad>> {
        let mut out = Vec::new();
        if let Some(state) = &self.inner.rpg
            && let Some(tables) = &state.tables
        {
            let layer_grads: Vec<Option<Tensor>> = state
                .generated
                .iter()
                .map(|var| grads.get(var.as_tensor()).cloned())
                .collect();
            if layer_grads.iter().any(Option::is_some) {
                out.push(ParamGrad {
                    name: RING_NAME.to_string(),
                    group: ParamGroup::Ring,
                    var: state.ring.clone(),
                    grad: tables.ring_gradient(&layer_grads)?,
                });
            }
        } else if let Some(state) = &self.inner.rpg {
            let layer_grads = state
                .generated
                .iter()
                .map(|var| {
                    grads
                        .get(var.as_tensor())
                        .map(|g| {
                            g.to_dtype(DType::F32)?
                                .to_device(&Device::Cpu)?
                                .contiguous()
                        })
                        .transpose()
                })
                .collect::<Result<Vec<_>>>()?;
            if layer_grads.iter().any(Option::is_some) {
                let storages: Vec<_> = layer_grads
                    .iter()
                    .map(|g| g.as_ref().map(Tensor::storage_and_layout))
                    .collect();
                let slices = storages
                    .iter()
                    .map(|s| {
                        s.as_ref()
                            .map(|(s, l)| cpu_f32(s, l, "ring gradient"))
                            .transpose()
                    })
                    .collect::<Result<Vec<_>>>()?;
                let mut ring_grad = vec![0.0f32; state.ring.as_tensor().elem_count()];
                let mut views = split_rings_mut(&mut ring_grad, state.placement.ring_lengths());
                state
                    .placement
                    .accumulate_layers_on(&slices, &mut views, &RayonPool)
                    .map_err(core_err)?;
                let len = ring_grad.len();
                let grad = Tensor::from_vec(ring_grad, len, &self.inner.device)?;
                out.push(ParamGrad {
                    name: RING_NAME.to_string(),
                    group: ParamGroup::Ring,
                    var: state.ring.clone(),
                    grad,
                });
            }
        }
        for (name, var) in self.vars().iter().filter(|(n, _)| !is_buffer(n)) {
            if let Some(g) = grads.get(var.as_tensor()) {
                // Detached: a gradient is computed from the step's graph and
                // would otherwise keep every activation of the step alive for
                // as long as it is held (e.g. in a momentum buffer).
                out.push(ParamGrad {
                    name: name.clone(),
                    group: ParamGroup::Ordinary,
                    var: var.clone(),
                    grad: g.detach(),
                });
            }
        }
        Ok(out)
    }

    /// Every tensor of the equivalent dense model (generated weights
    /// materialised from the current ring, unshared parameters and buffers),
    /// by name: what an export or a dense twin loads.
    pub fn materialize(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (name, var) in self.vars().iter() {
            out.insert(name.clone(), var.as_tensor().copy()?);
        }
        if let Some(state) = &self.inner.rpg {
            self.regenerate()?;
            for (layer, var) in state.placement.layers().iter().zip(&state.generated) {
                out.insert(layer.name.clone(), var.as_tensor().copy()?);
            }
        }
        Ok(out)
    }

    /// Sets persistent tensors (and the ring, under [`RING_NAME`]) from
    /// loaded values, checking names, shapes and that every value is finite.
    pub fn assign(&self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        if let Some(state) = &self.inner.rpg {
            let ring = tensors
                .get(RING_NAME)
                .ok_or_else(|| TensorMismatch::Missing {
                    name: RING_NAME.into(),
                })?;
            check_shape(RING_NAME, ring.dims(), state.ring.dims())?;
            check_finite(RING_NAME, ring)?;
            state
                .ring
                .set(&ring.to_dtype(DType::F32)?.to_device(&self.inner.device)?)?;
        }
        self.assign_persistent(tensors)?;
        self.regenerate()
    }

    /// Every persistent tensor (unshared parameters, buffers) from `tensors`.
    fn assign_persistent(&self, tensors: &BTreeMap<String, Tensor>) -> Result<()> {
        for (name, var) in self.vars().iter() {
            let Some(value) = tensors.get(name) else {
                return Err(TensorMismatch::Missing { name: name.clone() }.into());
            };
            check_shape(name, value.dims(), var.dims())?;
            check_finite(name, value)?;
            var.set(&value.to_dtype(var.dtype())?.to_device(&self.inner.device)?)?;
        }
        Ok(())
    }

    /// Warm start from a dense model of the same architecture (`tensors` by
    /// name, as an export holds them): the unshared tensors are copied, and
    /// the ring becomes the least-squares fit of the dense shared weights
    /// (`rpg_core::Placement::project`). Returns the relative error of the
    /// fit, `||W - G(ring)|| / ||W||` over the shared weights (0 for a dense
    /// store, which takes every tensor as it is).
    pub fn project_dense(&self, tensors: &BTreeMap<String, Tensor>) -> Result<f64> {
        let Some(state) = &self.inner.rpg else {
            self.assign_persistent(tensors)?;
            return Ok(0.0);
        };
        let placement = &state.placement;
        let mut weights = Vec::with_capacity(placement.shared_len());
        for layer in placement.layers() {
            let Some(value) = tensors.get(&layer.name) else {
                bail!(
                    "the dense model has no tensor `{}`, which this model shares",
                    layer.name
                )
            };
            check_shape(&layer.name, value.dims(), &layer.shape)?;
            let values = finite_values(&layer.name, value)?;
            weights.extend(values);
        }
        let mut ring = vec![0f32; state.ring.as_tensor().elem_count()];
        {
            let mut views = split_rings_mut(&mut ring, placement.ring_lengths());
            placement.project(&weights, &mut views).map_err(core_err)?;
        }
        let mut generated = vec![0f32; weights.len()];
        placement
            .generate(
                &split_rings(&ring, placement.ring_lengths()),
                &mut generated,
            )
            .map_err(core_err)?;
        let len = ring.len();
        state
            .ring
            .set(&Tensor::from_vec(ring, len, &self.inner.device)?)?;
        self.assign_persistent(tensors)?;
        self.regenerate()?;
        let (mut diff, mut norm) = (0f64, 0f64);
        for (w, g) in weights.iter().zip(&generated) {
            diff += f64::from(w - g).powi(2);
            norm += f64::from(*w).powi(2);
        }
        Ok(if norm > 0.0 {
            (diff / norm).sqrt()
        } else {
            0.0
        })
    }

    fn shared_var(&self, name: &str) -> Option<(usize, &Var)> {
        let state = self.inner.rpg.as_ref()?;
        let idx = state
            .placement
            .layers()
            .iter()
            .position(|l| l.name == name)?;
        Some((idx, &state.generated[idx]))
    }
}

fn check_shape(name: &str, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return Err(TensorMismatch::Shape {
            name: name.into(),
            found: got.to_vec(),
            expected: want.to_vec(),
        }
        .into());
    }
    Ok(())
}

/// Refuses a tensor with a NaN or an infinity: a model built on it would
/// evaluate to nonsense (a NaN logit used to count as a correct answer).
fn check_finite(name: &str, value: &Tensor) -> Result<()> {
    finite_values(name, value).map(drop)
}

/// A tensor's values as f32, refused (see [`check_finite`]) unless all are
/// finite.
fn finite_values(name: &str, value: &Tensor) -> Result<Vec<f32>> {
    let values = value
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(TensorMismatch::NonFinite {
            name: name.into(),
            value: values[index],
            index,
        }
        .into());
    }
    Ok(values)
}

/// The f32 data of a contiguous CPU tensor's storage.
/// The f32 data of a CPU tensor's storage, read where it lies (`what`
/// names it in errors).
fn cpu_f32<'a>(
    storage: &'a Storage,
    layout: &candle_core::Layout,
    what: &str,
) -> Result<&'a [f32]> {
    match storage {
        Storage::Cpu(cpu) => f32_slice(cpu, layout, what),
        _ => bail!("{what}: the tensor is not on the CPU"),
    }
}

/// Positions per parallel part of a layer's generation: large enough to
/// amortise a task, small enough to balance ResNet-18's layers over the
/// threads.
const GENERATION_PART: usize = 1 << 16;

/// Fills one generated Var's storage from the rings.
struct GenerateLayer<'a> {
    placement: &'a Placement,
    index: usize,
    rings: &'a [&'a [f32]],
}

impl InplaceOp1 for GenerateLayer<'_> {
    fn name(&self) -> &'static str {
        "rpg-generate-layer"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &candle_core::Layout) -> Result<()> {
        let CpuStorage::F32(data) = storage else {
            bail!("generated weights are f32 on this path")
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("generated weights must be contiguous")
        };
        // In parts on rayon's pool, which the layers already share: the
        // placement's own threads per layer, nested inside it, were OS
        // threads started per layer and step (ResNet-18-cifar b32
        // generation 6.8-10.3 -> 4.8-5.5 ms a step, AVX-512 EPYC, 2 cores).
        data[start..end]
            .par_chunks_mut(GENERATION_PART)
            .enumerate()
            .try_for_each(|(part, out)| {
                self.placement.generate_layer_part(
                    self.index,
                    self.rings,
                    part * GENERATION_PART,
                    out,
                )
            })
            .map_err(core_err)
    }
}

fn split_rings<'a>(ring: &'a [f32], lengths: &[usize]) -> Vec<&'a [f32]> {
    let mut rest = ring;
    lengths
        .iter()
        .map(|&n| {
            let (head, tail) = rest.split_at(n);
            rest = tail;
            head
        })
        .collect()
}

fn split_rings_mut<'a>(ring: &'a mut [f32], lengths: &[usize]) -> Vec<&'a mut [f32]> {
    let mut rest = ring;
    lengths
        .iter()
        .map(|&n| {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(n);
            rest = tail;
            head
        })
        .collect()
}

impl SimpleBackend for ParamStore {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        if let Some((_, var)) = self.shared_var(name) {
            check_shape(name, s.dims(), var.dims())?;
            return Ok(var.as_tensor().clone());
        }
        if let Some(state) = &self.inner.rpg
            && !is_buffer(name)
            && state.registry.get(name).is_none()
        {
            bail!(
                "parameter `{name}` was not seen when the model's registry was recorded: build the same model as the one recorded"
            );
        }
        let mut vars = self.vars();
        if let Some(var) = vars.get(name) {
            if var.dims() != s.dims() {
                bail!(
                    "parameter `{name}` requested with shape {:?}, but it exists with {:?}",
                    s.dims(),
                    var.dims()
                );
            }
            return Ok(var.as_tensor().clone());
        }
        let values = init_values(h, s.dims(), self.inner.seed, name);
        let var = Var::from_tensor(&Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?)?;
        vars.insert(name.to_string(), var.clone());
        Ok(var.as_tensor().clone())
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        if let Some((_, var)) = self.shared_var(name) {
            return Ok(var.as_tensor().clone());
        }
        match self.vars().get(name) {
            Some(var) => Ok(var.as_tensor().clone()),
            None => bail!("no parameter `{name}` in the store"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.shared_var(name).is_some() || self.vars().contains_key(name)
    }
}

/// rpg-core's parallel parts on rayon's pool, which the step's kernels
/// already use: no OS thread is started per step.
struct RayonPool;

impl rpg_core::ForkJoin for RayonPool {
    fn run_all<'a>(&self, tasks: Vec<Box<dyn FnOnce() + Send + 'a>>) {
        rayon::scope(|scope| {
            for task in tasks {
                scope.spawn(move |_| task());
            }
        });
    }
}
