//! Exports to the tools people already run.

pub mod chrome_trace;
pub mod environment;
pub mod html;
#[cfg(any(feature = "webhook", feature = "otel"))]
pub mod http;
pub mod json;
#[cfg(feature = "otel")]
pub mod otel;
#[cfg(feature = "prometheus")]
pub mod prometheus;
