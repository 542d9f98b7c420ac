//! The load report: a summary table, JSON, and a self-contained HTML page (inline SVG charts).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::{LoadConfig, Sample, Stats};

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Latency {
    pub(super) fn of(h: &Histogram<u64>) -> Latency {
        let ms = |v: u64| v as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1000.0,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: LoadConfig,
    pub published: u64,
    pub acked: u64,
    pub publish_errors: u64,
    pub notifications_expected: u64,
    pub notifications_received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub elapsed_s: f64,
    pub publishes_per_s: f64,
    pub notifications_per_s: f64,
    /// publish -> IQ result.
    pub ack: Latency,
    /// publish -> event received, over all subscribers.
    pub e2e: Latency,
    /// (second, p50 ms, p99 ms, notifications) for the latency-over-time chart.
    pub timeline: Vec<(u64, f64, f64, u64)>,
    /// (upper bound ms, count) buckets of the e2e latency histogram.
    pub buckets: Vec<(f64, u64)>,
    /// CPU time of the watched processes (`--cpu-pid`) from the first publish to the last
    /// notification.
    pub cpu: Vec<CpuUse>,
    pub traffic: Traffic,
    /// Once a second: resident memory of the watched processes and stratus's outbound queue.
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuUse {
    pub name: String,
    pub pid: u32,
    pub cpu_s: f64,
    /// Microseconds of CPU per notification received (0 when none was).
    pub us_per_notification: f64,
}

/// What the server was sent per notification: by the publishing client, and (publish loads
/// through stratus with `--metrics`) by stratus on its component stream.
#[derive(Debug, Clone, Serialize)]
pub struct Traffic {
    /// Bytes of the publishers' stanzas (publish IQs, or raw mode's messages).
    pub publisher_bytes_per_notification: f64,
    /// stratus's bytes, stanzas per publish, and stanzas per socket write.
    pub stratus_bytes_per_notification: Option<f64>,
    pub stratus_stanzas_per_publish: Option<f64>,
    pub stratus_stanzas_per_write: Option<f64>,
}

fn per(total: f64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { total / n as f64 }
}

impl Report {
    pub(super) fn build(
        cfg: &LoadConfig,
        s: &Stats,
        publish_elapsed: Duration,
        elapsed: Duration,
        expected: u64,
        m: super::Measured,
    ) -> Report {
        let super::Measured {
            cpu,
            stream,
            samples,
        } = m;
        let e2e = s.e2e.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let ack = s.ack.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let received = s.received.load(Ordering::Relaxed);
        let duplicates = s.duplicates.load(Ordering::Relaxed);
        let timeline = s
            .timeline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty())
            .map(|(sec, h)| {
                (
                    sec as u64,
                    h.value_at_quantile(0.5) as f64 / 1000.0,
                    h.value_at_quantile(0.99) as f64 / 1000.0,
                    h.len(),
                )
            })
            .collect();
        let mut buckets = Vec::new();
        if !e2e.is_empty() {
            for v in e2e.iter_log(100, 1.5) {
                buckets.push((
                    v.value_iterated_to() as f64 / 1000.0,
                    v.count_since_last_iteration(),
                ));
            }
        }
        let secs = publish_elapsed.as_secs_f64().max(1e-9);
        let published = s.published.load(Ordering::Relaxed);
        Report {
            config: cfg.clone(),
            published,
            acked: s.acked.load(Ordering::Relaxed),
            publish_errors: s.errors.load(Ordering::Relaxed),
            notifications_expected: expected,
            notifications_received: received,
            lost: expected.saturating_sub(received.saturating_sub(duplicates)),
            duplicates,
            elapsed_s: elapsed.as_secs_f64(),
            publishes_per_s: published as f64 / secs,
            notifications_per_s: received as f64 / elapsed.as_secs_f64().max(1e-9),
            ack: Latency::of(&ack),
            e2e: Latency::of(&e2e),
            timeline,
            buckets,
            cpu: cfg
                .cpu_pids
                .iter()
                .zip(cpu)
                .map(|((name, pid), used)| CpuUse {
                    name: name.clone(),
                    pid: *pid,
                    cpu_s: used.as_secs_f64(),
                    us_per_notification: if received == 0 {
                        0.0
                    } else {
                        used.as_secs_f64() * 1e6 / received as f64
                    },
                })
                .collect(),
            traffic: Traffic {
                publisher_bytes_per_notification: per(
                    s.published_bytes.load(Ordering::Relaxed) as f64,
                    received,
                ),
                stratus_bytes_per_notification: stream.map(|c| per(c.bytes, received)),
                stratus_stanzas_per_publish: stream.map(|c| per(c.stanzas, published)),
                stratus_stanzas_per_write: stream.map(|c| c.stanzas / c.writes.max(1.0)),
            },
            samples,
        }
    }

    /// The summary table printed at the end.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let c = &self.config;
        let _ = writeln!(
            t,
            "{} mode, service {} node {}, P={} N={} W={} payload {} B",
            match c.mode {
                super::Mode::Pubsub => "pubsub",
                super::Mode::Raw => "raw",
            },
            c.service,
            c.node,
            c.publishers,
            c.subscribers,
            c.window,
            c.payload
        );
        let _ = writeln!(
            t,
            "{:<22} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "latency (ms)", "p50", "p90", "p99", "p99.9", "max", "count"
        );
        for (name, l) in [
            ("publish -> IQ result", &self.ack),
            ("publish -> event", &self.e2e),
        ] {
            let _ = writeln!(
                t,
                "{name:<22} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9}",
                l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, l.count
            );
        }
        let _ = writeln!(
            t,
            "publishes {} (acked {}, errors {}) in {:.2} s: {:.0} publishes/s, {:.0} notifications/s",
            self.published,
            self.acked,
            self.publish_errors,
            self.elapsed_s,
            self.publishes_per_s,
            self.notifications_per_s
        );
        let _ = writeln!(
            t,
            "notifications expected {}, received {}, lost {}, duplicated {}",
            self.notifications_expected, self.notifications_received, self.lost, self.duplicates
        );
        for c in &self.cpu {
            let _ = writeln!(
                t,
                "CPU of {} (pid {}): {:.3} s, {:.1} us per notification",
                c.name, c.pid, c.cpu_s, c.us_per_notification
            );
        }
        let tr = &self.traffic;
        let _ = write!(
            t,
            "sent to the server per notification: {:.1} bytes by the publishers",
            tr.publisher_bytes_per_notification
        );
        if let (Some(b), Some(sp), Some(sw)) = (
            tr.stratus_bytes_per_notification,
            tr.stratus_stanzas_per_publish,
            tr.stratus_stanzas_per_write,
        ) {
            let _ = write!(
                t,
                ", {b:.1} bytes by stratus ({sp:.2} stanzas per publish, {sw:.1} stanzas per write)"
            );
        }
        let _ = writeln!(t);
        for (i, (name, _)) in self.config.cpu_pids.iter().enumerate() {
            let rss: Vec<u64> = self
                .samples
                .iter()
                .filter_map(|s| s.rss_kib.get(i).copied().flatten())
                .collect();
            if let (Some(first), Some(last), Some(max)) =
                (rss.first(), rss.last(), rss.iter().max())
            {
                let _ = writeln!(
                    t,
                    "resident memory of {name}: {first} KiB at the start, {last} KiB at the end, {max} KiB at most ({} samples)",
                    rss.len()
                );
            }
        }
        let queue: Vec<u64> = self
            .samples
            .iter()
            .filter_map(|s| s.outbound_queue)
            .collect();
        if let Some(max) = queue.iter().max() {
            let _ = writeln!(
                t,
                "stratus outbound queue: {max} stanzas at most, {} at the end ({} samples)",
                queue.last().copied().unwrap_or(0),
                queue.len()
            );
        }
        t
    }

    /// A self-contained HTML page: latency histogram and latency over time as inline SVG.
    pub fn html(&self) -> String {
        let mut h = String::new();
        let _ = write!(
            h,
            "<!doctype html><html><head><meta charset='utf-8'><title>stratus-load report</title>\
             <style>body{{font-family:sans-serif;margin:2em}}pre{{background:#f4f4f4;padding:1em}}\
             svg{{background:#fff;border:1px solid #ccc}}text{{font-size:11px}}</style></head><body>\
             <h1>stratus-load report</h1><pre>{}</pre>",
            crate::xml::element::escape_text(&self.table())
        );
        h.push_str("<h2>publish &#8594; event latency histogram</h2>");
        h.push_str(&bar_chart(&self.buckets));
        h.push_str("<h2>latency over time (p50 blue, p99 red)</h2>");
        h.push_str(&line_chart(&self.timeline));
        for (i, c) in self.config.cpu_pids.iter().enumerate() {
            let points: Vec<(u64, f64)> = self
                .samples
                .iter()
                .filter_map(|s| Some((s.second, s.rss_kib.get(i).copied()?? as f64 / 1024.0)))
                .collect();
            if !points.is_empty() {
                let _ = write!(
                    h,
                    "<h2>resident memory of {} (pid {}) over time</h2>",
                    crate::xml::element::escape_text(&c.0),
                    c.1
                );
                h.push_str(&series_chart("MiB", &[("#393", &points)]));
            }
        }
        let queue: Vec<(u64, f64)> = self
            .samples
            .iter()
            .filter_map(|s| Some((s.second, s.outbound_queue? as f64)))
            .collect();
        if !queue.is_empty() {
            h.push_str("<h2>stratus outbound queue over time (stanzas)</h2>");
            h.push_str(&series_chart("stanzas", &[("#c63", &queue)]));
        }
        let _ = write!(
            h,
            "<h2>raw data</h2><pre>{}</pre></body></html>",
            crate::xml::element::escape_text(
                &serde_json::to_string_pretty(self).unwrap_or_default()
            )
        );
        h
    }
}

fn bar_chart(buckets: &[(f64, u64)]) -> String {
    let (w, hgt) = (800.0, 300.0);
    let max = buckets.iter().map(|b| b.1).max().unwrap_or(1).max(1) as f64;
    let n = buckets.len().max(1) as f64;
    let bw = (w - 60.0) / n;
    let mut s = format!(
        "<svg width='{w}' height='{}' xmlns='http://www.w3.org/2000/svg'>",
        hgt + 40.0
    );
    for (i, (upper, count)) in buckets.iter().enumerate() {
        let bh = (*count as f64 / max) * hgt;
        let x = 50.0 + i as f64 * bw;
        let _ = write!(
            s,
            "<rect x='{x:.1}' y='{:.1}' width='{:.1}' height='{bh:.1}' fill='#4a7'><title>&lt;= {upper:.2} ms: {count}</title></rect>",
            hgt - bh + 10.0,
            (bw - 1.0).max(1.0)
        );
        if i % (buckets.len() / 8).max(1) == 0 {
            let _ = write!(
                s,
                "<text x='{x:.1}' y='{:.1}'>{upper:.1}</text>",
                hgt + 25.0
            );
        }
    }
    let _ = write!(
        s,
        "<text x='5' y='20'>{max}</text><text x='{:.1}' y='{:.1}'>ms</text></svg>",
        w - 30.0,
        hgt + 38.0
    );
    s
}

/// (second, p50 ms, p99 ms, count) of one second of the run.
type TimePoint = (u64, f64, f64, u64);

fn line_chart(points: &[TimePoint]) -> String {
    let p50: Vec<(u64, f64)> = points.iter().map(|p| (p.0, p.1)).collect();
    let p99: Vec<(u64, f64)> = points.iter().map(|p| (p.0, p.2)).collect();
    series_chart("ms", &[("#36c", &p50), ("#c33", &p99)])
}

/// Lines over time (seconds) on one scale, each (colour, points).
fn series_chart(unit: &str, series: &[(&str, &[(u64, f64)])]) -> String {
    let (w, hgt) = (800.0, 300.0);
    let all = || series.iter().flat_map(|(_, p)| p.iter());
    let max_t = all().map(|p| p.0).max().unwrap_or(1).max(1) as f64;
    let max_v = all().map(|p| p.1).fold(0.001, f64::max);
    let mut svg = format!(
        "<svg width='{w}' height='{}' xmlns='http://www.w3.org/2000/svg'>",
        hgt + 40.0
    );
    for (colour, points) in series {
        let line = points
            .iter()
            .map(|(t, v)| {
                let x = 50.0 + *t as f64 / max_t * (w - 70.0);
                let y = 10.0 + hgt - v / max_v * hgt;
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ");
        let _ = write!(
            svg,
            "<polyline fill='none' stroke='{colour}' stroke-width='2' points='{line}'/>"
        );
    }
    let _ = write!(
        svg,
        "<text x='5' y='20'>{max_v:.1} {unit}</text><text x='{:.1}' y='{:.1}'>{max_t} s</text></svg>",
        w - 50.0,
        hgt + 30.0
    );
    svg
}
