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
    host_panics: Family<PluginLabel, Counter>,
    storage_up: prometheus_client::metrics::gauge::Gauge,
    storage_failures: prometheus_client::metrics::gauge::Gauge,
    plugin_up: Family<PluginLabel, prometheus_client::metrics::gauge::Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<StatusLabels, Counter>::default();
        // 50 µs .. ~3 s.
        let latency = Family::new_with_constructor(Buckets(|| {
            Histogram::new(exponential_buckets(0.00005, 2.0, 17))
        }));
        // 1 µs .. ~65 ms.
        let instantiate = Family::new_with_constructor(Buckets(|| {
            Histogram::new(exponential_buckets(0.000001, 2.0, 17))
        }));
        let traps = Family::<PluginLabel, Counter>::default();
        let deadlines = Family::<PluginLabel, Counter>::default();
        let host_panics = Family::<PluginLabel, Counter>::default();
        let storage_up = prometheus_client::metrics::gauge::Gauge::default();
        let storage_failures = prometheus_client::metrics::gauge::Gauge::default();
        let plugin_up = Family::<PluginLabel, prometheus_client::metrics::gauge::Gauge>::default();
        let mut registry = Registry::with_prefix("wasmgate");
        registry.register(
            "requests",
            "HTTP requests answered, by plugin and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from the request's arrival to its response",
            latency.clone(),
        );
        registry.register(
            "instantiate_seconds",
            "Time to instantiate a fresh plugin instance",
            instantiate.clone(),
        );
        registry.register("traps", "Calls that ended in a plugin trap", traps.clone());
        registry.register(
            "deadline_hits",
            "Calls stopped at their deadline",
            deadlines.clone(),
        );
        registry.register(
            "host_panics",
            "Calls that failed because a host function panicked (a damaged database, say)",
            host_panics.clone(),
        );
        registry.register(
            "storage_up",
            "1 while the database works, 0 while it is unavailable and being reopened",
            storage_up.clone(),
        );
        registry.register(
            "storage_failures",
            "I/O failures of the database since start (a full disk, say)",
            storage_failures.clone(),
        );
        registry.register(
            "plugin_up",
            "1 for a configured plugin that serves, 0 for one that failed to load",
            plugin_up.clone(),
        );
        Metrics {
            registry,
            plugin_up,
            requests,
            latency,
            instantiate,
            traps,
            deadlines,
            host_panics,
            storage_up,
            storage_failures,
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
        self.latency
            .get_or_create(&label(plugin))
            .observe(elapsed.as_secs_f64());
    }

    pub fn instantiated(&self, plugin: &str, elapsed: Duration) {
        self.instantiate
            .get_or_create(&label(plugin))
            .observe(elapsed.as_secs_f64());
    }

    /// Sets whether plugin `plugin` serves (it is configured and loaded).
    pub fn plugin_up(&self, plugin: &str, up: bool) {
        self.plugin_up
            .get_or_create(&PluginLabel {
                plugin: plugin.to_string(),
            })
            .set(i64::from(up));
    }

    /// Forgets a plugin that is no longer configured.
    pub fn plugin_removed(&self, plugin: &str) {
        self.plugin_up.remove(&PluginLabel {
            plugin: plugin.to_string(),
        });
    }

    pub fn trap(&self, plugin: &str) {
        self.traps.get_or_create(&label(plugin)).inc();
    }

    pub fn host_panic(&self, plugin: &str) {
        self.host_panics.get_or_create(&label(plugin)).inc();
    }

    /// The database's state, set just before rendering.
    pub fn storage(&self, up: bool, failures: u64) {
        self.storage_up.set(i64::from(up));
        self.storage_failures.set(failures as i64);
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
