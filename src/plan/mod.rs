//! The planner: compares the desired model with a live snapshot and decides every change. Pure and synchronous.

pub mod step;

pub use step::Step;
