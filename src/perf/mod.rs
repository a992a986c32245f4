//! The performance plugin: the bus, listeners, storage, statistics, reports and dumps.
//!
//! It depends on nothing else in the crate; the engine uses it through its public API.

pub mod alerts;
pub mod analysis;
pub mod compare;
pub mod dump;
pub mod emitter;
pub mod event;
pub mod export;
pub mod facade;
pub mod key;
mod lane;
pub mod listener;
pub mod monitor;
pub mod name;
pub mod report;
pub mod span;
pub mod stats;
pub mod storage;
pub mod thresholds;
#[cfg(feature = "tracing-layer")]
pub mod tracing_layer;
pub mod tracker;
mod window;
