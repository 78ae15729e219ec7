//! Realistic stores for demos (`./dev seed`) and benchmarks (`./dev bench`).

pub mod generator;
pub mod store;
