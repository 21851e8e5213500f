//! lda (being written).
