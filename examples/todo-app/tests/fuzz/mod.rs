//! The fuzzer's parts: JSON text generators, frames, requests and filters built from them,
//! the contract's oracle, the server process, a raw socket, the checking session and the
//! seeded runner.

pub mod child;
pub mod filters;
pub mod frames;
pub mod json;
pub mod oracle;
pub mod requests;
pub mod run;
pub mod session;
pub mod wire;
