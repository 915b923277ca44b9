//! Errors for impossible specs and registries. `rpg-core` never panics on
//! user input.

/// What can be wrong with a registry, a ring spec or a DoF request.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registry has no layers, or no shared layers at all.
    #[error("the layer registry has no shared layers: nothing to generate from a ring")]
    NoSharedLayers,
    /// Two layers have the same name.
    #[error("layer `{0}` is registered twice: layer names must be unique")]
    DuplicateLayer(String),
    /// A layer with a zero-sized or empty shape.
    #[error("layer `{name}` has shape {shape:?}: every dimension must be positive")]
    EmptyLayer {
        /// Layer name.
        name: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A ring of length zero.
    #[error("ring {group} has length 0: a ring needs at least one entry")]
    ZeroRingLength {
        /// Group index.
        group: usize,
    },
    /// A ring too long for the 31-bit index encoding.
    #[error("ring {group} has length {len}, above the limit of {max} entries")]
    RingTooLong {
        /// Group index.
        group: usize,
        /// Requested length.
        len: u64,
        /// Largest allowed length.
        max: u64,
    },
    /// The spec names a different number of rings than the registry has groups.
    #[error(
        "the spec has {rings} ring(s) but the registry's shared layers use groups 0..{groups}: give one ring length per group"
    )]
    GroupCountMismatch {
        /// Ring lengths in the spec.
        rings: usize,
        /// Groups used by shared layers.
        groups: usize,
    },
    /// A group index with no shared layer in it.
    #[error("ring group {0} has no shared layers: groups must be numbered 0..G without gaps")]
    EmptyGroup(usize),
    /// More shared elements than the index encoding can address.
    #[error("group {group} serves {elements} shared elements, more than u32::MAX")]
    TooManyElements {
        /// Group index.
        group: usize,
        /// Element count.
        elements: u64,
    },
    /// A DoF ratio outside (0, 1].
    #[error(
        "DoF ratio {0} is outside (0, 1]: ask for a fraction of the dense parameter count, e.g. 0.1"
    )]
    RatioOutOfRange(f64),
    /// A DoF ratio too small to leave room for any ring entry.
    #[error(
        "DoF ratio {ratio} allows {budget} degrees of freedom, but the unshared parameters alone take {unshared}: the smallest ratio for this model is about {min_ratio:.6}"
    )]
    RatioTooSmall {
        /// Requested ratio.
        ratio: f64,
        /// `ratio * dense` rounded.
        budget: u64,
        /// Unshared parameters.
        unshared: u64,
        /// Smallest feasible ratio (one ring entry per group).
        min_ratio: f64,
    },
    /// An unknown placement, scale rule or placement version.
    #[error(transparent)]
    UnknownName(#[from] crate::names::UnknownName),
    /// A slice kernel got buffers of the wrong length.
    #[error("{what}: expected length {expected}, got {got}")]
    LengthMismatch {
        /// Which buffer.
        what: &'static str,
        /// Expected length.
        expected: usize,
        /// Actual length.
        got: usize,
    },
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
