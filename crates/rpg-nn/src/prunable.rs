//! How a model's layers chain, for structured pruning of output channels.

/// A layer whose output channels may be removed, and the layer that reads
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrunableLayer {
    /// Its weight, `(out, ...)`.
    pub weight: String,
    /// Its bias, `(out)`, if any.
    pub bias: Option<String>,
    /// The weight of the next layer, `(out2, in2, ...)`, whose inputs are
    /// this layer's outputs.
    pub next: String,
    /// Inputs of the next layer per output channel of this one (the spatial
    /// size when a conv is flattened into a linear layer, else 1).
    pub next_inputs_per_channel: usize,
}
