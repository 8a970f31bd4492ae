//! Shared helpers for integration tests; each test binary includes them with `mod support;`.

// Each test binary uses a different subset of the helpers.
#![allow(dead_code)]

pub mod boto3;
pub mod emulator;
pub mod player;
pub mod sdk;

pub use emulator::Emulator;
pub use player::Player;
