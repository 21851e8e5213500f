//! mlp (being written).
