//! The journal's contract: model-based operation sequences, crashes, tampering
//! and the open-time refusals.

mod crash;
mod frames;
mod memory;
mod model;
mod open;
mod support;
mod tamper;
