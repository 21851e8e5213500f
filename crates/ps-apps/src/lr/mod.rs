//! lr (being written).
