//! Realistic stores for demos (`./dev seed`) and the benchmark harness
//! (`./dev bench`): Chronicle measured beside what users would pick instead.

pub mod append;
pub mod generator;
pub mod images;
pub mod lag;
pub mod reads;
pub mod replay;
pub mod report;
pub mod run;
pub mod search;
pub mod stack;
pub mod stats;
pub mod store;
