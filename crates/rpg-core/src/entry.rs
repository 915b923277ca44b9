//! The bit layout of a placement entry: where one generated weight reads
//! the ring, and with which sign. Both the placement (which writes entries)
//! and the kernels (which decode them) depend on this and on nothing else
//! of each other's.

/// Bit 31 of an entry: the sign.
pub const SIGN_BIT: u32 = 1 << 31;
/// Bits 0..31 of an entry: the ring index.
pub const INDEX_MASK: u32 = SIGN_BIT - 1;

/// `value` with the entry's sign applied (a flip of the sign bit, so exact).
#[inline(always)]
pub(crate) fn signed(value: f32, entry: u32) -> f32 {
    f32::from_bits(value.to_bits() ^ (entry & SIGN_BIT))
}
