//! Optimizers whose state can be saved: SGD with momentum / Nesterov and
//! weight decay (PyTorch semantics), and AdamW (decoupled decay).
//! candle-nn's SGD has no momentum and its AdamW state is private.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Storage, Tensor, Var};
use rayon::prelude::*;
use rpg_kernels::f32_slice;
use rpg_nn::{ParamGrad, ParamGroup};

use rpg_core::names::Named;

/// Saving or restoring optimizer state failed.
#[derive(Debug, thiserror::Error)]
pub enum OptimizerError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The state file could not be read.
    #[error("reading optimizer state {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state could not be serialised.
    #[error("serialising optimizer state {path}: {source}")]
    Serialize {
        /// The file.
        path: PathBuf,
        /// Why.
        source: safetensors::SafeTensorError,
    },
    /// The state file could not be written.
    #[error("writing optimizer state {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The state file is not optimizer state.
    #[error("{path}: corrupt optimizer state ({reason})")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The state holds a buffer for a parameter the model does not have,
    /// or of another shape.
    #[error(
        "{path} holds optimizer state for `{name}` {found:?}, but the model's is {expected}: it belongs to another model's checkpoint"
    )]
    ParameterMismatch {
        /// The file.
        path: PathBuf,
        /// The parameter.
        name: String,
        /// The buffer's shape.
        found: Vec<usize>,
        /// The parameter's shape, or that it has none.
        expected: String,
    },
    /// The state is another optimizer's.
    #[error(
        "{path} holds {found} state but the run uses {expected:?}: resume with the optimizer it was trained with"
    )]
    KindMismatch {
        /// The file.
        path: PathBuf,
        /// The kind it holds.
        found: String,
        /// The kind the run uses.
        expected: OptimizerKind,
    },
}

type Result<T> = std::result::Result<T, OptimizerError>;

/// Which update rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// SGD with momentum (Nesterov optional).
    Sgd,
    /// Adam with decoupled weight decay.
    Adamw,
}

impl Named for OptimizerKind {
    const WHAT: &'static str = "optimizer";
    const ALL: &'static [Self] = &[Self::Sgd, Self::Adamw];
    fn name(self) -> &'static str {
        match self {
            Self::Sgd => "sgd",
            Self::Adamw => "adamw",
        }
    }
}

rpg_core::named_text_impls!(OptimizerKind);

/// Hyper-parameters other than the learning rate.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerConfig {
    /// Update rule.
    pub kind: OptimizerKind,
    /// SGD momentum.
    pub momentum: f64,
    /// Nesterov momentum.
    pub nesterov: bool,
    /// Weight decay.
    pub weight_decay: f64,
    /// Apply weight decay to the ring too (the paper does).
    pub ring_weight_decay: bool,
    /// Adam betas and epsilon.
    pub betas: (f64, f64),
    /// Adam epsilon.
    pub eps: f64,
}

impl OptimizerConfig {
    /// SGD with (non-Nesterov) momentum and weight decay on every
    /// parameter, the ring included.
    pub fn sgd(momentum: f64, weight_decay: f64) -> Self {
        Self {
            kind: OptimizerKind::Sgd,
            momentum,
            nesterov: false,
            weight_decay,
            ring_weight_decay: true,
            betas: (0.9, 0.999),
            eps: 1e-8,
        }
    }
}

/// One parameter to update: name, group, variable, gradient, learning rate.
#[derive(Debug)]
pub struct Update<'a> {
    /// Parameter name (the key of its optimizer state).
    pub name: &'a str,
    /// Ring or ordinary: whether `ring_weight_decay` applies.
    pub group: ParamGroup,
    /// The variable.
    pub var: &'a Var,
    /// Its gradient.
    pub grad: &'a Tensor,
    /// Learning rate for this parameter.
    pub lr: f64,
}

/// One update per gradient, each at the rate `lr(group)`.
pub fn updates(grads: &[ParamGrad], lr: impl Fn(ParamGroup) -> f64) -> Vec<Update<'_>> {
    grads
        .iter()
        .map(|g| Update {
            name: &g.name,
            group: g.group,
            var: &g.var,
            grad: &g.grad,
            lr: lr(g.group),
        })
        .collect()
}

/// Optimizer with saved state.
#[derive(Debug)]
pub struct Optimizer {
    config: OptimizerConfig,
    /// First moments (SGD momentum buffers or Adam `m`).
    first: BTreeMap<String, Tensor>,
    /// Adam second moments.
    second: BTreeMap<String, Tensor>,
    steps: u64,
}

impl Optimizer {
    /// A fresh optimizer.
    pub fn new(config: OptimizerConfig) -> Self {
        Self {
            config,
            first: BTreeMap::new(),
            second: BTreeMap::new(),
            steps: 0,
        }
    }

    /// Steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Applies one update to every parameter.
    pub fn step(&mut self, updates: &[Update<'_>]) -> Result<()> {
        self.steps += 1;
        for u in updates {
            let decay = if u.group == ParamGroup::Ring && !self.config.ring_weight_decay {
                0.0
            } else {
                self.config.weight_decay
            };
            // Detached so that optimizer state never holds a graph (the
            // parameter is a Var, so ops on it would be tracked).
            let p = &u.var.as_tensor().detach();
            let next = match self.config.kind {
                OptimizerKind::Sgd => self.sgd(u, p, decay)?,
                OptimizerKind::Adamw => self.adamw(u, p, decay)?,
            };
            u.var.set(&next)?;
        }
        Ok(())
    }

    fn sgd(&mut self, u: &Update<'_>, p: &Tensor, decay: f64) -> Result<Tensor> {
        let m = self.config.momentum;
        let buf = (m != 0.0).then(|| self.first.get(u.name)).flatten();
        let rule = SgdRule {
            decay,
            momentum: m,
            nesterov: self.config.nesterov,
            lr: u.lr,
        };
        if let Some((next, buf)) = rule.fused(p, &u.grad.detach(), buf)? {
            if let Some(buf) = buf {
                self.first.insert(u.name.to_string(), buf);
            }
            return Ok(next);
        }
        let mut g = u.grad.detach();
        if decay != 0.0 {
            g = (g + (p * decay)?)?;
        }
        let m = self.config.momentum;
        if m != 0.0 {
            let buf = match self.first.get(u.name) {
                Some(buf) => ((buf * m)? + &g)?,
                None => g.clone(),
            };
            g = if self.config.nesterov {
                (g + (&buf * m)?)?
            } else {
                buf.clone()
            };
            self.first.insert(u.name.to_string(), buf);
        }
        Ok((p - (g * u.lr)?)?)
    }

    fn adamw(&mut self, u: &Update<'_>, p: &Tensor, decay: f64) -> Result<Tensor> {
        let (b1, b2) = self.config.betas;
        let g = &u.grad.detach();
        let m = match self.first.get(u.name) {
            Some(m) => ((m * b1)? + (g * (1.0 - b1))?)?,
            None => (g * (1.0 - b1))?,
        };
        let v = match self.second.get(u.name) {
            Some(v) => ((v * b2)? + (g.sqr()? * (1.0 - b2))?)?,
            None => (g.sqr()? * (1.0 - b2))?,
        };
        let t = self.steps as i32;
        let m_hat = (&m / (1.0 - b1.powi(t)))?;
        let v_hat = (&v / (1.0 - b2.powi(t)))?;
        let update = (m_hat / (v_hat.sqrt()? + self.config.eps)?)?;
        self.first.insert(u.name.to_string(), m);
        self.second.insert(u.name.to_string(), v);
        let decayed = (p * (1.0 - u.lr * decay))?;
        Ok((decayed - (update * u.lr)?)?)
    }

    /// Writes the moments (`first.NAME`, `second.NAME`) and the step count.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors: HashMap<String, Tensor> = HashMap::new();
        for (prefix, map) in [("first", &self.first), ("second", &self.second)] {
            for (name, t) in map {
                tensors.insert(format!("{prefix}.{name}"), t.to_device(&Device::Cpu)?);
            }
        }
        let meta = HashMap::from([
            ("steps".to_string(), self.steps.to_string()),
            ("kind".to_string(), format!("{:?}", self.config.kind)),
        ]);
        let bytes = safetensors::serialize(&tensors, Some(meta)).map_err(|source| {
            OptimizerError::Serialize {
                path: path.to_path_buf(),
                source,
            }
        })?;
        rpg_nn::durable::write_atomic(path, bytes).map_err(|source| OptimizerError::Write {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Refuses state whose buffers do not fit `params` (name and shape of
    /// every trainable parameter): another model's optimizer state would
    /// otherwise fail mid-step.
    pub fn check_fits(&self, path: &Path, params: &[(String, Vec<usize>)]) -> Result<()> {
        for (name, buffer) in self.first.iter().chain(&self.second) {
            let expected = params.iter().find(|(n, _)| n == name).map(|(_, s)| s);
            if expected.map(Vec::as_slice) != Some(buffer.dims()) {
                return Err(OptimizerError::ParameterMismatch {
                    path: path.to_path_buf(),
                    name: name.clone(),
                    found: buffer.dims().to_vec(),
                    expected: expected.map_or("absent".into(), |s| format!("{s:?}")),
                });
            }
        }
        Ok(())
    }

    /// Restores state written by [`Optimizer::save`].
    pub fn load(&mut self, path: &Path, device: &Device) -> Result<()> {
        let bytes = std::fs::read(path).map_err(|source| OptimizerError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.load_bytes(path, &bytes, device)
    }

    /// [`Optimizer::load`] of bytes read already (`path` names them in
    /// errors).
    pub fn load_bytes(&mut self, path: &Path, bytes: &[u8], device: &Device) -> Result<()> {
        let corrupt = |reason: String| OptimizerError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };
        let (_, meta) =
            safetensors::SafeTensors::read_metadata(bytes).map_err(|e| corrupt(e.to_string()))?;
        let meta = meta.metadata().clone().unwrap_or_default();
        let kind = meta.get("kind").cloned().unwrap_or_default();
        if kind != format!("{:?}", self.config.kind) {
            return Err(OptimizerError::KindMismatch {
                path: path.to_path_buf(),
                found: kind,
                expected: self.config.kind,
            });
        }
        self.steps = meta
            .get("steps")
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| corrupt("no step count".into()))?;
        let tensors = candle_core::safetensors::load_buffer(bytes, device)?;
        self.first.clear();
        self.second.clear();
        for (key, t) in tensors {
            if let Some(name) = key.strip_prefix("first.") {
                self.first.insert(name.to_string(), t);
            } else if let Some(name) = key.strip_prefix("second.") {
                self.second.insert(name.to_string(), t);
            }
        }
        Ok(())
    }
}

/// SGD's update of one parameter, as numbers.
#[derive(Debug, Clone, Copy)]
struct SgdRule {
    decay: f64,
    momentum: f64,
    nesterov: bool,
    lr: f64,
}

impl SgdRule {
    /// The update in one pass over f32 CPU tensors (else None): the new
    /// parameter and momentum buffer. Each element goes through the same
    /// f32 operations, in the same order, as the tensor-op form in
    /// [`Optimizer::sgd`] (whose scalar products are Candle's `affine`,
    /// `v * a + 0`), so the result is bit for bit the same; it is one pass
    /// instead of seven, each with a buffer of its own.
    fn fused(
        &self,
        p: &Tensor,
        g: &Tensor,
        buf: Option<&Tensor>,
    ) -> Result<Option<(Tensor, Option<Tensor>)>> {
        let cpu_f32 =
            |t: &Tensor| t.device().is_cpu() && t.dtype() == DType::F32 && t.is_contiguous();
        if !cpu_f32(p) || !cpu_f32(g) || !buf.is_none_or(cpu_f32) || p.dims() != g.dims() {
            return Ok(None);
        }
        let (ps, pl) = p.storage_and_layout();
        let (gs, gl) = g.storage_and_layout();
        let (Storage::Cpu(ps), Storage::Cpu(gs)) = (&*ps, &*gs) else {
            return Ok(None);
        };
        let (p_values, g_values) = (f32_slice(ps, pl, "sgd")?, f32_slice(gs, gl, "sgd")?);
        let buf_guard = buf.map(|b| b.storage_and_layout());
        let buf_values = match &buf_guard {
            Some((storage, layout)) => match &**storage {
                Storage::Cpu(bs) => Some(f32_slice(bs, layout, "sgd")?),
                _ => return Ok(None),
            },
            None => None,
        };
        let (decay, m, lr) = (self.decay as f32, self.momentum as f32, self.lr as f32);
        let n = p_values.len();
        let mut next = vec![0f32; n];
        let with_momentum = self.momentum != 0.0;
        let mut next_buf = vec![0f32; if with_momentum { n } else { 0 }];
        let inputs = SgdInputs {
            p: p_values,
            g: g_values,
            buf: buf_values.unwrap_or(&[]),
            decay,
            momentum: m,
            lr,
        };
        // One monomorphic loop per case, so each vectorises without
        // branches; chunks run on rayon's pool.
        let kernel = match (
            self.decay != 0.0,
            with_momentum,
            buf_values.is_some(),
            self.nesterov,
        ) {
            (d, false, _, _) => {
                if d {
                    sgd_chunk::<true, false, false, false>
                } else {
                    sgd_chunk::<false, false, false, false>
                }
            }
            (true, true, true, false) => sgd_chunk::<true, true, true, false>,
            (true, true, false, false) => sgd_chunk::<true, true, false, false>,
            (true, true, true, true) => sgd_chunk::<true, true, true, true>,
            (true, true, false, true) => sgd_chunk::<true, true, false, true>,
            (false, true, true, false) => sgd_chunk::<false, true, true, false>,
            (false, true, false, false) => sgd_chunk::<false, true, false, false>,
            (false, true, true, true) => sgd_chunk::<false, true, true, true>,
            (false, true, false, true) => sgd_chunk::<false, true, false, true>,
        };
        if with_momentum {
            next.par_chunks_mut(SGD_CHUNK)
                .zip(next_buf.par_chunks_mut(SGD_CHUNK))
                .enumerate()
                .for_each(|(c, (out, out_buf))| kernel(&inputs, c * SGD_CHUNK, out, out_buf));
        } else {
            next.par_chunks_mut(SGD_CHUNK)
                .enumerate()
                .for_each(|(c, out)| kernel(&inputs, c * SGD_CHUNK, out, &mut []));
        }
        let next = Tensor::from_vec(next, p.shape(), &Device::Cpu)?;
        let next_buf = with_momentum
            .then(|| Tensor::from_vec(next_buf, p.shape(), &Device::Cpu))
            .transpose()?;
        Ok(Some((next, next_buf)))
    }
}

/// Elements per task of the one-pass SGD update.
const SGD_CHUNK: usize = 1 << 15;

/// The operands of the one-pass SGD update.
struct SgdInputs<'a> {
    p: &'a [f32],
    g: &'a [f32],
    buf: &'a [f32],
    decay: f32,
    momentum: f32,
    lr: f32,
}

/// The SGD update of elements `start..start + out.len()` (see
/// [`SgdRule::fused`] for why each `+ 0.0` is there).
fn sgd_chunk<const DECAY: bool, const MOMENTUM: bool, const BUF: bool, const NESTEROV: bool>(
    x: &SgdInputs<'_>,
    start: usize,
    out: &mut [f32],
    out_buf: &mut [f32],
) {
    let end = start + out.len();
    let (p, g) = (&x.p[start..end], &x.g[start..end]);
    for i in 0..out.len() {
        let mut d = g[i];
        if DECAY {
            d += p[i] * x.decay + 0.0;
        }
        if MOMENTUM {
            let b = if BUF {
                (x.buf[start + i] * x.momentum + 0.0) + d
            } else {
                d
            };
            out_buf[i] = b;
            d = if NESTEROV {
                d + (b * x.momentum + 0.0)
            } else {
                b
            };
        }
        out[i] = p[i] - (d * x.lr + 0.0);
    }
}

/// The dtype in which per-step values (losses, counts, squared norms) are
/// summed on a device: f64, as the host would, except on Metal, which has
/// no f64.
pub fn accumulation_dtype(device: &Device) -> DType {
    if device.is_metal() {
        DType::F32
    } else {
        DType::F64
    }
}

/// The global L2 norm of the gradients. Each tensor's f32 sum of squares
/// is added in f64 on the device, so the result is read (one
/// synchronisation) once, not once per tensor.
pub fn grad_norm(grads: &[ParamGrad]) -> candle_core::Result<f64> {
    let mut total: Option<Tensor> = None;
    for g in grads {
        let squares = g.grad.sqr()?.sum_all()?;
        let squares = squares.to_dtype(accumulation_dtype(squares.device()))?;
        total = Some(match total {
            None => squares,
            Some(t) => (t + squares)?,
        });
    }
    let total = match total {
        Some(t) => t.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        None => 0.0,
    };
    Ok(total.sqrt())
}

/// Scales gradients so their global L2 norm is at most `max_norm`; returns
/// the norm before clipping.
pub fn clip_grad_norm(grads: &mut [ParamGrad], max_norm: f64) -> candle_core::Result<f64> {
    let norm = grad_norm(grads)?;
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            g.grad = (&g.grad * scale)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-pass SGD update equals the tensor-op form bit for bit, with
    /// and without decay, momentum, an existing buffer and Nesterov.
    #[test]
    fn fused_sgd_is_the_tensor_ops_bit_for_bit() {
        let n = 1000;
        let values = |salt: u32| -> Vec<f32> {
            (0..n as u32)
                .map(|i| ((i * 7919 + salt * 104729) % 2003) as f32 / 1001.0 - 1.0)
                .collect()
        };
        let p = Tensor::from_vec(values(1), n, &Device::Cpu).unwrap();
        let g = Tensor::from_vec(values(2), n, &Device::Cpu).unwrap();
        let old = Tensor::from_vec(values(3), n, &Device::Cpu).unwrap();
        for (decay, momentum, nesterov, with_buf) in [
            (5e-4, 0.9, false, true),
            (5e-4, 0.9, false, false),
            (5e-4, 0.9, true, true),
            (0.0, 0.9, false, true),
            (5e-4, 0.0, false, false),
            (0.0, 0.0, false, false),
        ] {
            let rule = SgdRule {
                decay,
                momentum,
                nesterov,
                lr: 0.05,
            };
            let buf = with_buf.then_some(&old);
            let (fused, fused_buf) = rule.fused(&p, &g, buf).unwrap().unwrap();
            // The tensor-op form, as `Optimizer::sgd` writes it.
            let mut d = g.clone();
            if decay != 0.0 {
                d = (d + (&p * decay).unwrap()).unwrap();
            }
            let mut reference_buf = None;
            if momentum != 0.0 {
                let b = match buf {
                    Some(b) => ((b * momentum).unwrap() + &d).unwrap(),
                    None => d.clone(),
                };
                d = if nesterov {
                    (d + (&b * momentum).unwrap()).unwrap()
                } else {
                    b.clone()
                };
                reference_buf = Some(b);
            }
            let reference = (&p - (d * 0.05).unwrap()).unwrap();
            let bits = |t: &Tensor| -> Vec<u32> {
                t.to_vec1::<f32>()
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            };
            assert_eq!(
                bits(&fused),
                bits(&reference),
                "{decay} {momentum} {nesterov}"
            );
            assert_eq!(
                fused_buf.as_ref().map(bits),
                reference_buf.as_ref().map(bits)
            );
        }
    }

    fn config(kind: OptimizerKind, nesterov: bool) -> OptimizerConfig {
        OptimizerConfig {
            kind,
            momentum: 0.9,
            nesterov,
            weight_decay: 0.1,
            ring_weight_decay: true,
            betas: (0.9, 0.999),
            eps: 1e-8,
        }
    }

    /// Two steps on p = [1, -2] with gradient [0.5, 0.5], lr 0.1; expected
    /// values follow torch.optim.SGD / AdamW:
    /// ```python
    /// p = torch.tensor([1., -2.], requires_grad=True)
    /// opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=N)
    /// for _ in range(2): p.grad = torch.tensor([.5, .5]); opt.step()
    /// ```
    fn run(kind: OptimizerKind, nesterov: bool) -> Vec<f32> {
        let var = Var::new(&[1f32, -2.0], &Device::Cpu).unwrap();
        let grad = Tensor::new(&[0.5f32, 0.5], &Device::Cpu).unwrap();
        let mut opt = Optimizer::new(config(kind, nesterov));
        for _ in 0..2 {
            let u = Update {
                name: "w",
                group: ParamGroup::Ordinary,
                var: &var,
                grad: &grad,
                lr: 0.1,
            };
            opt.step(&[u]).unwrap();
        }
        var.as_tensor().to_vec1().unwrap()
    }

    fn close(got: &[f32], want: &[f32]) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn sgd_matches_pytorch() {
        // step 1: g = [0.6, 0.3], buf = g, p = [0.94, -2.03]
        // step 2: g = [0.594, 0.297], buf = [1.134, 0.567], p = [0.8266, -2.0867]
        close(&run(OptimizerKind::Sgd, false), &[0.8266, -2.0867]);
        // nesterov: step 1 p -= 0.1*(g + 0.9 g) = [0.886, -2.057]
        // step 2: g = [0.5886, 0.2943], buf = 0.9*[0.6,0.3] + g = [1.1286, 0.5643]
        //         p -= 0.1*(g + 0.9 buf) = [0.886 - 0.160434, -2.057 - 0.080217]
        close(&run(OptimizerKind::Sgd, true), &[0.725566, -2.137217]);
    }

    #[test]
    fn adamw_matches_pytorch() {
        // Adam's first steps move by ~lr regardless of gradient scale;
        // decay multiplies by (1 - lr*wd) = 0.99 each step first.
        // step 1: p = 0.99 p - 0.1 = [0.89, -2.08]
        // step 2: p = 0.99 p - 0.1 = [0.7811, -2.1592]
        close(&run(OptimizerKind::Adamw, false), &[0.7811, -2.1592]);
    }

    #[test]
    fn state_round_trips_and_kind_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let var = Var::new(&[1f32], &Device::Cpu).unwrap();
        let grad = Tensor::new(&[1f32], &Device::Cpu).unwrap();
        let mut opt = Optimizer::new(config(OptimizerKind::Adamw, false));
        let u = Update {
            name: "w",
            group: ParamGroup::Ordinary,
            var: &var,
            grad: &grad,
            lr: 0.1,
        };
        opt.step(&[u]).unwrap();
        let path = dir.path().join("opt.safetensors");
        opt.save(&path).unwrap();
        let mut restored = Optimizer::new(config(OptimizerKind::Adamw, false));
        restored.load(&path, &Device::Cpu).unwrap();
        assert_eq!(restored.steps(), 1);
        assert_eq!(restored.first.len(), 1);
        let mut sgd = Optimizer::new(config(OptimizerKind::Sgd, false));
        assert!(matches!(
            sgd.load(&path, &Device::Cpu),
            Err(OptimizerError::KindMismatch { .. })
        ));
    }

    /// `ring_weight_decay: false` exempts the ring group, and only it.
    #[test]
    fn ring_weight_decay_follows_the_group() {
        let run = |group: ParamGroup| {
            let var = Var::new(&[1f32], &Device::Cpu).unwrap();
            let grad = Tensor::new(&[0f32], &Device::Cpu).unwrap();
            let mut opt = Optimizer::new(OptimizerConfig {
                ring_weight_decay: false,
                momentum: 0.0,
                ..config(OptimizerKind::Sgd, false)
            });
            let u = Update {
                name: "rpg.ring",
                group,
                var: &var,
                grad: &grad,
                lr: 0.1,
            };
            opt.step(&[u]).unwrap();
            var.as_tensor().to_vec1::<f32>().unwrap()[0]
        };
        assert_eq!(run(ParamGroup::Ring), 1.0);
        close(&[run(ParamGroup::Ordinary)], &[0.99]);
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let var = Var::new(&[0f32, 0.0], &Device::Cpu).unwrap();
        let mut grads = vec![ParamGrad {
            name: "w".to_string(),
            group: ParamGroup::Ordinary,
            var,
            grad: Tensor::new(&[3f32, 4.0], &Device::Cpu).unwrap(),
        }];
        let norm = clip_grad_norm(&mut grads, 1.0).unwrap();
        assert!((norm - 5.0).abs() < 1e-6);
        let clipped: Vec<f32> = grads[0].grad.to_vec1().unwrap();
        assert!((clipped[0] - 0.6).abs() < 1e-4 && (clipped[1] - 0.8).abs() < 1e-4);
    }
}
