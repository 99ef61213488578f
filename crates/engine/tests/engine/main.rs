//! The engine without a database: every mode over a memory source and a
//! memory target, and the run control (stop, abort, pause, limits).

mod appliers;
mod control;
mod modes;
mod support;
