//! Reading the read models. Every function here is one indexed read.

pub mod users;
