//! Posting JSON over HTTP(S), for webhook alerts.

use std::time::Duration;

/// Posts JSON bodies to one URL, with a 5-second timeout per request.
///
/// ```
/// # use backtest_perf::export::http::JsonPost;
/// // Nothing listens on port 9 (discard): the error names the URL.
/// let err = JsonPost::new("http://127.0.0.1:9/hook").send("{}".into()).unwrap_err();
/// assert!(err.starts_with("POST http://127.0.0.1:9/hook failed: "));
/// ```
#[derive(Debug)]
pub struct JsonPost {
    url: String,
    agent: ureq::Agent,
}

impl JsonPost {
    /// A poster to `url`.
    ///
    /// ```
    /// let _post = backtest_perf::export::http::JsonPost::new("http://localhost:4318/v1/traces");
    /// ```
    pub fn new(url: impl Into<String>) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build();
        JsonPost {
            url: url.into(),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// POSTs `body` as `application/json`; the error names the URL.
    ///
    /// ```
    /// let post = backtest_perf::export::http::JsonPost::new("http://127.0.0.1:9/nothing-listens");
    /// assert!(post.send("{}".into()).is_err());
    /// ```
    pub fn send(&self, body: String) -> Result<(), String> {
        self.agent
            .post(&self.url)
            .header("Content-Type", "application/json")
            .send(body)
            .map(drop)
            .map_err(|e| format!("POST {} failed: {e}", self.url))
    }
}
