//! Cross-crate tests live in this package's test targets (`golden.rs`, …); the library is
//! empty because Cargo needs a target to hang them on.
