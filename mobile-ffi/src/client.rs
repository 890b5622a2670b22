//! The Rust client core, free of uniffi: plain Rust types, usable from Rust tests and
//! benchmarks, wrapped thinly by [`crate::api`].

pub mod actions;
pub mod clock;
pub mod core;
pub mod enroll;
pub mod error;
pub mod identity;
pub mod net;
pub mod proofs;
pub mod school_year;
pub mod store;
