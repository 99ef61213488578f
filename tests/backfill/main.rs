//! The operator path against a real Postgres: one database per test.

mod contract;
mod engine;
mod golden;
mod support;
