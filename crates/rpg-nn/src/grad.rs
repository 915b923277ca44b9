//! Gradients as the optimizer needs them: each trainable parameter with the
//! group it belongs to, so that per-group settings (the ring's learning-rate
//! scale, whether it decays) follow from a type, never from a name.

use candle_core::{Tensor, Var};

/// Which group a trainable parameter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamGroup {
    /// The ring (all groups' rings concatenated): every shared weight is
    /// generated from it.
    Ring,
    /// An ordinary parameter: unshared weights, biases, norms.
    Ordinary,
}

/// A trainable parameter and its gradient.
#[derive(Debug, Clone)]
pub struct ParamGrad {
    /// The parameter's name (its name in model files).
    pub name: String,
    /// Its group.
    pub group: ParamGroup,
    /// The variable.
    pub var: Var,
    /// Its gradient, detached from the step's graph.
    pub grad: Tensor,
}
