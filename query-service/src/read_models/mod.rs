//! Reading the read models. Every function here is one indexed read.

pub mod cache;
pub mod comments;
pub mod lists;
pub mod posts;
pub mod status;
pub mod users;
