//! A small xorshift for the unit tests' random cases: no dependency for a few thousand draws.

/// Draws in `0..n` from a xorshift64 seeded with `seed` (not zero).
pub fn xorshift(mut state: u64) -> impl FnMut(u64) -> u64 {
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    }
}
