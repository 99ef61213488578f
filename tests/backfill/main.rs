//! The operator path against a real Postgres: one database per test.

mod audit;
mod contract;
mod engine;
mod golden;
mod initial;
mod source;
mod support;
