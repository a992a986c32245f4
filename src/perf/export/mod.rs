//! Exports to the tools people already run.

pub mod chrome_trace;
pub mod environment;
pub mod html;
pub mod json;
#[cfg(feature = "otel")]
pub mod otel;
#[cfg(feature = "prometheus")]
pub mod prometheus;
