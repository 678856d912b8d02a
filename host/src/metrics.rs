//! Prometheus metrics for `GET /metrics` on the admin listener.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabel {
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    plugin: String,
    status: u16,
}

#[derive(Clone)]
struct Buckets(fn() -> Histogram);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        (self.0)()
    }
}

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<StatusLabels, Counter>,
    latency: Family<PluginLabel, Histogram, Buckets>,
    instantiate: Family<PluginLabel, Histogram, Buckets>,
    traps: Family<PluginLabel, Counter>,
    deadlines: Family<PluginLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<StatusLabels, Counter>::default();
        // 50 µs .. ~3 s.
        let latency = Family::new_with_constructor(Buckets(|| Histogram::new(exponential_buckets(0.00005, 2.0, 17))));
        // 1 µs .. ~65 ms.
        let instantiate = Family::new_with_constructor(Buckets(|| Histogram::new(exponential_buckets(0.000001, 2.0, 17))));
        let traps = Family::<PluginLabel, Counter>::default();
        let deadlines = Family::<PluginLabel, Counter>::default();
        let mut registry = Registry::with_prefix("wasmgate");
        registry.register("requests", "HTTP requests answered, by plugin and status", requests.clone());
        registry.register("request_duration_seconds", "Time from the request's arrival to its response", latency.clone());
        registry.register("instantiate_seconds", "Time to instantiate a fresh plugin instance", instantiate.clone());
        registry.register("traps", "Calls that ended in a plugin trap", traps.clone());
        registry.register("deadline_hits", "Calls stopped at their deadline", deadlines.clone());
        Metrics {
            registry,
            requests,
            latency,
            instantiate,
            traps,
            deadlines,
        }
    }
}

fn label(plugin: &str) -> PluginLabel {
    PluginLabel {
        plugin: plugin.to_string(),
    }
}

impl Metrics {
    /// One answered request; `plugin` is "-" when no plugin was involved.
    pub fn request(&self, plugin: &str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&StatusLabels {
                plugin: plugin.to_string(),
                status,
            })
            .inc();
        self.latency.get_or_create(&label(plugin)).observe(elapsed.as_secs_f64());
    }

    pub fn instantiated(&self, plugin: &str, elapsed: Duration) {
        self.instantiate.get_or_create(&label(plugin)).observe(elapsed.as_secs_f64());
    }

    pub fn trap(&self, plugin: &str) {
        self.traps.get_or_create(&label(plugin)).inc();
    }

    pub fn deadline(&self, plugin: &str) {
        self.deadlines.get_or_create(&label(plugin)).inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
