//! Dense or RPG: how a store holds its parameters.

/// Dense: every parameter is its own `Var`. Rpg: shared weights come from a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Ordinary trainable parameters.
    Dense,
    /// Shared weights generated from ring(s).
    Rpg,
}

impl Mode {
    /// `dense` or `rpg`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Dense => "dense",
            Mode::Rpg => "rpg",
        }
    }
}
