//! A small xorshift for the unit tests' random cases: no dependency for a few thousand draws.

/// Raw draws of a xorshift64 seeded with `state` (not zero).
pub fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}
