//! Process metrics in the Prometheus/OpenMetrics text format (`prometheus-client`, the Prometheus
//! project's own Rust client), served by `http.rs` on `/metrics`.
//!
//! One registry for the process. Every metric the hot paths touch is created up front and held
//! here, so recording is an atomic add (no lock, no label lookup); only error conditions, which
//! are off the hot path, go through a labelled family.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

/// A histogram of durations recorded with atomic adds only: the crate's own `Histogram` takes
/// a mutex per observation, which every request would contend on. Buckets double from 50 us.
#[derive(Debug, Clone)]
pub struct Durations(Arc<DurationsInner>);

#[derive(Debug)]
struct DurationsInner {
    /// Upper bounds in nanoseconds.
    bounds: Vec<u64>,
    /// Per bucket (not cumulative), the last one for what exceeds every bound.
    counts: Vec<AtomicU64>,
    sum_nanos: AtomicU64,
}

impl Durations {
    fn new(first: Duration, buckets: usize) -> Durations {
        let first = first.as_nanos() as u64;
        let bounds: Vec<u64> = (0..buckets).map(|i| first << i).collect();
        let counts = (0..=buckets).map(|_| AtomicU64::new(0)).collect();
        Durations(Arc::new(DurationsInner {
            bounds,
            counts,
            sum_nanos: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, d: Duration) {
        let nanos = d.as_nanos().min(u64::MAX as u128) as u64;
        let i = self.0.bounds.partition_point(|b| *b < nanos);
        self.0.counts[i].fetch_add(1, Ordering::Relaxed);
        self.0.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl TypedMetric for Durations {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Durations {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let inner = &self.0;
        let mut buckets: Vec<(f64, u64)> = inner
            .bounds
            .iter()
            .zip(&inner.counts)
            .map(|(b, c)| (*b as f64 / 1e9, c.load(Ordering::Relaxed)))
            .collect();
        let over = inner.counts[inner.bounds.len()].load(Ordering::Relaxed);
        buckets.push((f64::INFINITY, over));
        let count = buckets.iter().map(|(_, c)| c).sum();
        let sum = inner.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The request operations counted, as `op` labels (XEP-0060 requests by their `Request`
/// variant, plus the other IQs the service answers).
pub const OPS: &[&str] = &[
    "create",
    "publish",
    "retract",
    "subscribe",
    "unsubscribe",
    "options",
    "set_options",
    "default_options",
    "items",
    "subscriptions",
    "affiliations",
    "configuration",
    "configure",
    "default_config",
    "delete",
    "purge",
    "node_subscriptions",
    "set_node_subscriptions",
    "node_affiliations",
    "set_node_affiliations",
    "disco_info",
    "disco_items",
    "command",
    "other",
];

/// The kinds of stanza counted.
#[derive(Debug, Clone, Copy)]
pub enum StanzaKind {
    Iq = 0,
    Message = 1,
    Presence = 2,
}

pub struct Metrics {
    registry: Registry,
    stanzas_in: [Counter; 3],
    /// Stanzas written to the server (each message of a batch counts).
    pub stanzas_out: Counter,
    /// Bytes and write calls on the component stream (the batching of stanzas into writes).
    pub bytes_out: Counter,
    pub stream_writes: Counter,
    /// The stream window ([`crate::component::flow`]): pings written and answered, times it was
    /// full, connections where it was turned off.
    pub window_pings: Counter,
    pub window_answered: Counter,
    pub window_full: Counter,
    pub window_off: Counter,
    requests_ok: Vec<Counter>,
    requests_error: Vec<Counter>,
    request_errors: Family<Vec<(&'static str, String)>, Counter>,
    pub request_seconds: Durations,
    pub notifications: Counter,
    pub notifications_multicast: Counter,
    pub multicast_refusals: Counter,
    pub reconnects: Counter,
    pub config_reloads: Counter,
    pub bounced: Counter,
    pub storage_errors: Counter,
    storage_operations: Family<Vec<(&'static str, &'static str)>, Counter>,
    pub outbound_queue_stanzas: Gauge,
    pub outbound_queue_bytes: Gauge,
    pub connected: Gauge,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("stratus");
        let stanzas_in: Family<Vec<(&'static str, &'static str)>, Counter> = registered(
            &mut registry,
            "stanzas_received",
            "Stanzas received from the server, by kind",
        );
        let stanzas_in = ["iq", "message", "presence"]
            .map(|k| stanzas_in.get_or_create(&vec![("kind", k)]).clone());
        let requests: Family<Vec<(&'static str, &'static str)>, Counter> = registered(
            &mut registry,
            "requests",
            "Requests answered, by operation and outcome (ok or error)",
        );
        let by_op = |outcome: &'static str| -> Vec<Counter> {
            OPS.iter()
                .map(|op| {
                    requests
                        .get_or_create(&vec![("op", op), ("outcome", outcome)])
                        .clone()
                })
                .collect()
        };
        let (requests_ok, requests_error) = (by_op("ok"), by_op("error"));
        let request_errors = registered(
            &mut registry,
            "request_errors",
            "Requests answered with an error, by stanza error condition",
        );
        // 50 us .. ~1.6 s, then +Inf.
        let request_seconds = Durations::new(Duration::from_micros(50), 16);
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to its answer being queued",
            request_seconds.clone(),
        );
        let r = &mut registry;
        Metrics {
            stanzas_in,
            stanzas_out: registered(r, "stanzas_sent", "Stanzas written to the server"),
            bytes_out: registered(r, "bytes_sent", "Bytes written to the server"),
            stream_writes: registered(
                r,
                "stream_writes",
                "Writes to the server's socket (each one batch of queued stanzas)",
            ),
            window_pings: registered(
                r,
                "stream_window_pings",
                "Pings written to the server to move the stream window ([component] in_flight_bytes)",
            ),
            window_answered: registered(
                r,
                "stream_window_answered",
                "Window pings the server answered (an answer also covers the unanswered pings before it)",
            ),
            window_full: registered(
                r,
                "stream_window_full",
                "Times the window was full: ordinary stanzas held until the server caught up",
            ),
            window_off: registered(
                r,
                "stream_window_off",
                "Connections whose window was turned off: the server left a ping unanswered for 60 s",
            ),
            requests_ok,
            requests_error,
            request_errors,
            request_seconds,
            notifications: registered(
                r,
                "notifications",
                "Notification messages sent (one per recipient, multicast copies included)",
            ),
            notifications_multicast: registered(
                r,
                "notifications_multicast",
                "Notification messages handed to a XEP-0033 multicast service (one per recipient)",
            ),
            multicast_refusals: registered(
                r,
                "multicast_refusals",
                "Multicast stanzas a service refused (their notifications were resent one by one)",
            ),
            reconnects: registered(r, "reconnects", "Connections to the server after the first"),
            config_reloads: registered(
                r,
                "config_reloads",
                "Configurations read again and applied on SIGHUP",
            ),
            bounced: registered(
                r,
                "bounced_stanzas",
                "Stanzas refused for breaking a [component] limit (policy-violation)",
            ),
            storage_errors: registered(
                r,
                "storage_errors",
                "Requests failed by a storage error (nothing acknowledged)",
            ),
            storage_operations: registered(
                r,
                "storage_operations",
                "Store operations issued (reads and writes, by operation); a cache hit issues none",
            ),
            outbound_queue_stanzas: registered(
                r,
                "outbound_queue_stanzas",
                "Stanzas waiting to be written to the server",
            ),
            outbound_queue_bytes: registered(
                r,
                "outbound_queue_bytes",
                "Bytes waiting to be written to the server",
            ),
            connected: registered(r, "connected", "1 while the component stream is up"),
            registry,
        }
    }

    pub fn stanza_in(&self, kind: StanzaKind) {
        self.stanzas_in[kind as usize].inc();
    }

    /// A request answered: `op` from [`OPS`] (else counted as "other"), `error` its stanza error
    /// condition when it failed.
    pub fn request(&self, op: &str, error: Option<&str>, took: Duration) {
        let i = OPS.iter().position(|o| *o == op).unwrap_or(OPS.len() - 1);
        match error {
            None => {
                self.requests_ok[i].inc();
            }
            Some(condition) => {
                self.requests_error[i].inc();
                self.request_errors
                    .get_or_create(&vec![("condition", condition.to_owned())])
                    .inc();
            }
        }
        self.request_seconds.observe(took);
    }

    /// One store operation issued: `kind` is "read" or "write".
    pub fn storage_operation(&self, op: &'static str, kind: &'static str) {
        self.storage_operations
            .get_or_create(&vec![("op", op), ("kind", kind)])
            .inc();
    }

    /// The registry in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// A new metric of type `M`, registered under `name`.
fn registered<M>(registry: &mut Registry, name: &str, help: &str) -> M
where
    M: prometheus_client::registry::Metric + Clone + Default,
{
    let metric = M::default();
    registry.register(name, help, metric.clone());
    metric
}

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    static M: OnceLock<Metrics> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_move_and_render_in_the_text_format() {
        let m = Metrics::new();
        m.stanza_in(StanzaKind::Message);
        m.request("publish", None, Duration::from_millis(2));
        m.request("publish", Some("forbidden"), Duration::from_millis(1));
        m.request("frobnicate", None, Duration::from_millis(1));
        let text = m.render();
        for line in [
            "stratus_stanzas_received_total{kind=\"message\"} 1",
            "stratus_requests_total{op=\"publish\",outcome=\"ok\"} 1",
            "stratus_requests_total{op=\"publish\",outcome=\"error\"} 1",
            "stratus_requests_total{op=\"other\",outcome=\"ok\"} 1",
            "stratus_request_errors_total{condition=\"forbidden\"} 1",
            "stratus_request_duration_seconds_count 3",
            "stratus_request_duration_seconds_bucket{le=\"0.0016\"} 2",
            "stratus_request_duration_seconds_bucket{le=\"+Inf\"} 3",
        ] {
            assert!(text.contains(line), "{line} not in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
