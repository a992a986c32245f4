//! The default labels every metric and span carries: the service's name, its environment
//! and its version, from flags or OpenTelemetry's variables (`OTEL_SERVICE_NAME`,
//! `OTEL_RESOURCE_ATTRIBUTES` with `service.name`, `deployment.environment` and
//! `service.version`).

/// Service name, environment and version.
///
/// ```
/// use backtest_perf::export::labels::DefaultLabels;
/// let labels = DefaultLabels::from_vars(None, Some("deployment.environment=research,team=quant"));
/// assert_eq!(labels.service, "backtest-perf");
/// assert_eq!(labels.environment.as_deref(), Some("research"));
/// assert_eq!(labels.version, env!("CARGO_PKG_VERSION"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefaultLabels {
    /// `service` on metrics, `service.name` on spans (default `backtest-perf`).
    pub service: String,
    /// `environment` on metrics, `deployment.environment` on spans; none when unset.
    pub environment: Option<String>,
    /// `version` on metrics, `service.version` on spans (default this crate's version).
    pub version: String,
}

impl Default for DefaultLabels {
    fn default() -> Self {
        DefaultLabels {
            service: "backtest-perf".into(),
            environment: None,
            version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

impl DefaultLabels {
    /// From the values of `OTEL_SERVICE_NAME` and `OTEL_RESOURCE_ATTRIBUTES` (comma
    /// separated `key=value`, values percent-decoded); `OTEL_SERVICE_NAME` wins over
    /// `service.name`, as OpenTelemetry says.
    ///
    /// ```
    /// use backtest_perf::export::labels::DefaultLabels;
    /// let labels = DefaultLabels::from_vars(Some("bt"), Some("service.name=x,service.version=2%2E0"));
    /// assert_eq!((labels.service.as_str(), labels.version.as_str()), ("bt", "2.0"));
    /// ```
    pub fn from_vars(service_name: Option<&str>, resource_attributes: Option<&str>) -> Self {
        let mut labels = DefaultLabels::default();
        for pair in resource_attributes.unwrap_or("").split(',') {
            let Some((key, value)) = pair.split_once('=') else {
                continue;
            };
            let value = percent_decode(value.trim());
            if value.is_empty() {
                continue;
            }
            match key.trim() {
                "service.name" => labels.service = value,
                "deployment.environment" | "deployment.environment.name" => {
                    labels.environment = Some(value)
                }
                "service.version" => labels.version = value,
                _ => {}
            }
        }
        if let Some(name) = service_name.map(str::trim).filter(|n| !n.is_empty()) {
            labels.service = name.to_string();
        }
        labels
    }

    /// [`from_vars`](Self::from_vars) with the process environment.
    pub fn from_env() -> Self {
        let service = std::env::var("OTEL_SERVICE_NAME").ok();
        let attributes = std::env::var("OTEL_RESOURCE_ATTRIBUTES").ok();
        DefaultLabels::from_vars(service.as_deref(), attributes.as_deref())
    }

    /// The same labels with a service name and environment given (flags win over the
    /// environment variables).
    ///
    /// ```
    /// use backtest_perf::export::labels::DefaultLabels;
    /// let labels = DefaultLabels::default().with(Some("bt".into()), Some("ci".into()));
    /// assert_eq!(labels.as_pairs(), [("service", "bt".to_string()), ("environment", "ci".to_string()), ("version", env!("CARGO_PKG_VERSION").to_string())]);
    /// ```
    pub fn with(mut self, service: Option<String>, environment: Option<String>) -> Self {
        if let Some(service) = service {
            self.service = service;
        }
        if environment.is_some() {
            self.environment = environment;
        }
        self
    }

    /// The labels as metric label pairs: `service`, `environment` (when known), `version`.
    pub fn as_pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = vec![("service", self.service.clone())];
        if let Some(environment) = &self.environment {
            pairs.push(("environment", environment.clone()));
        }
        pairs.push(("version", self.version.clone()));
        pairs
    }
}

/// `%XX` sequences decoded; anything malformed is kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes.get(i), bytes.get(i + 1), bytes.get(i + 2)) {
            (Some(b'%'), Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let value = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(value as u8);
                i += 3;
            }
            (Some(&b), ..) => {
                out.push(b);
                i += 1;
            }
            (None, ..) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
