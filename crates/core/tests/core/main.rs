//! The core's rules and invariants, tested without any database.

mod diff;
mod encoding;
mod properties;
mod rules;
mod table;
