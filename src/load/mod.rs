//! The load generator behind `stratus-load`: P publishers and N subscribers on any XMPP server,
//! publishing to any pubsub service (stratus, a server's built-in one, or raw messages as the
//! server's own routing limit), measuring publish -> IQ result and publish -> event latency with
//! HDR histograms, counting lost and duplicated notifications.

pub mod report;
pub mod storm;
mod watch;

pub(crate) use watch::{Measured, scrape};
pub use watch::{Sample, StreamCounters, process_cpu, process_rss_kib};
use watch::{cpu_snapshot, sampler};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::Semaphore;

use crate::client::{Client, ClientConfig, ClientError, NS_CLIENT};
use crate::xml::Element;

pub use report::Report;

const NS_PUBSUB: &str = "http://jabber.org/protocol/pubsub";
const NS_EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const NS_LOAD: &str = "urn:stratus:load:0";

/// What the publishers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// XEP-0060 publishes to a node the subscribers subscribed to.
    Pubsub,
    /// The same payload sent directly to each subscriber as a message: the server's routing limit.
    Raw,
}

/// The message each subscriber gets in raw mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RawMessage {
    /// The notification a pubsub service sends (XEP-0060 7.1.2: `<event><items><item>`, the
    /// payload inside), without its `from`, which the server adds: the same bytes to parse,
    /// route and write as a service's notification.
    Notification,
    /// The payload and a small id element only: what the server's routing costs with fewer
    /// elements and bytes (its parse cost per element and byte, against `notification`).
    Minimal,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadConfig {
    /// c2s host:port.
    pub server: String,
    /// XMPP domain of the accounts.
    pub domain: String,
    /// The pubsub service JID (ignored in raw mode).
    pub service: String,
    pub node: String,
    pub publishers: usize,
    pub subscribers: usize,
    /// Publishes in flight per publisher (closed loop), when no rate is given.
    pub window: usize,
    /// Publishes per second per publisher (open loop); overrides the window.
    pub rate: Option<f64>,
    /// Items per publisher.
    pub count: u64,
    /// Stop publishing after this long, even if `count` is not reached.
    pub duration: Option<Duration>,
    /// Payload bytes per item.
    pub payload: usize,
    pub mode: Mode,
    /// The message of raw mode.
    pub raw_message: RawMessage,
    /// Accounts are PREFIX-p0.. and PREFIX-s0..; registered (XEP-0077) when missing.
    pub prefix: String,
    pub password: String,
    /// When the clients negotiate STARTTLS.
    pub tls: crate::client::TlsMode,
    /// Accept any server certificate (private servers with self-signed certificates).
    pub tls_insecure: bool,
    /// How long to wait for stragglers after the last publish.
    pub drain: Duration,
    /// Local processes (name, pid) whose CPU time the run reports, per notification: the
    /// server's and the pubsub component's cost of the load, beside its speed. Their resident
    /// memory is sampled every second.
    pub cpu_pids: Vec<(String, u32)>,
    /// host:port of stratus's metrics listener (`[http] listen`): its outbound queue is sampled
    /// every second.
    pub metrics: Option<String>,
}

/// Shared measurement state.
pub struct Stats {
    pub started: Instant,
    /// Raw mode: a "publish" completes when every subscriber received it, releasing a permit.
    raw_window: Option<(Arc<Semaphore>, u32)>,
    sent: Mutex<HashMap<String, Instant>>,
    seen: Mutex<HashMap<String, u32>>,
    pub ack: Mutex<Histogram<u64>>,
    pub e2e: Mutex<Histogram<u64>>,
    /// e2e latency per second since the start, for the latency-over-time chart.
    pub timeline: Mutex<Vec<Histogram<u64>>>,
    pub published: AtomicU64,
    /// Bytes of the stanzas the publishers sent while publishing.
    pub published_bytes: AtomicU64,
    pub acked: AtomicU64,
    pub errors: AtomicU64,
    pub received: AtomicU64,
    pub duplicates: AtomicU64,
    pub unknown: AtomicU64,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

impl Stats {
    fn new(raw_window: Option<(Arc<Semaphore>, u32)>) -> Stats {
        Stats {
            started: Instant::now(),
            raw_window,
            sent: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            ack: Mutex::new(hist()),
            e2e: Mutex::new(hist()),
            timeline: Mutex::new(Vec::new()),
            published: AtomicU64::new(0),
            published_bytes: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
        }
    }

    fn sent_at(&self, id: &str) -> Option<Instant> {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }

    fn record_event(&self, id: &str, now: Instant) {
        let Some(at) = self.sent_at(id) else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.received.fetch_add(1, Ordering::Relaxed);
        let micros = now.duration_since(at).as_micros().max(1) as u64;
        let _ = self
            .e2e
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(micros);
        let second = now.duration_since(self.started).as_secs() as usize;
        let mut tl = self.timeline.lock().unwrap_or_else(|e| e.into_inner());
        while tl.len() <= second {
            tl.push(hist());
        }
        let _ = tl[second].record(micros);
    }
}

/// Logs in, registering the account (XEP-0077) when it does not exist yet.
async fn login(cc: &ClientConfig) -> Result<Client, ClientError> {
    match Client::connect(cc).await {
        Ok(c) => Ok(c),
        Err(ClientError::Auth(_)) => {
            Client::register_with(cc).await?;
            Client::connect(cc).await
        }
        Err(e) => Err(e),
    }
}

async fn connect_all(cfg: &LoadConfig, role: &str, n: usize) -> Result<Vec<Client>, ClientError> {
    let configs = (0..n).map(|i| {
        let name = format!("{}-{role}{i}", cfg.prefix);
        ClientConfig {
            addr: cfg.server.clone(),
            domain: cfg.domain.clone(),
            username: name,
            password: cfg.password.clone(),
            resource: "load".to_owned(),
            tls: cfg.tls,
            tls_insecure: cfg.tls_insecure,
        }
    });
    login_all(configs).await
}

/// Logs every account in (registering those missing), in order, 32 at a time: SCRAM costs CPU on
/// both sides.
async fn login_all(
    configs: impl IntoIterator<Item = ClientConfig>,
) -> Result<Vec<Client>, ClientError> {
    let configs: Vec<ClientConfig> = configs.into_iter().collect();
    let mut out = Vec::with_capacity(configs.len());
    for chunk in configs.chunks(32) {
        let tasks: Vec<_> = chunk
            .iter()
            .cloned()
            .map(|cc| tokio::spawn(async move { login(&cc).await }))
            .collect();
        for t in tasks {
            out.push(
                t.await
                    .map_err(|e| ClientError::Protocol(e.to_string()))??,
            );
        }
    }
    Ok(out)
}

/// An IQ error whose condition is `conflict` (XEP-0060 8.1.2: the node exists).
fn is_conflict(r: &Element) -> bool {
    r.children()
        .filter(|e| e.name() == "error")
        .any(|e| e.children().any(|c| c.name() == "conflict"))
}

fn payload(size: usize) -> Element {
    Element::new("entry", NS_LOAD).text("x".repeat(size))
}

/// Runs the whole load: connect, set up the node and subscriptions, publish, drain, report.
pub async fn run(cfg: LoadConfig, progress: bool) -> Result<Report, ClientError> {
    // A wrong pid is said before the clients log in.
    cpu_snapshot(&cfg.cpu_pids)?;
    let publishers = connect_all(&cfg, "p", cfg.publishers).await?;
    let mut subscribers = connect_all(&cfg, "s", cfg.subscribers).await?;
    let mut publishers = publishers;
    if cfg.mode == Mode::Pubsub {
        let create = Element::new("iq", NS_CLIENT)
            .attr("type", "set")
            .attr("to", cfg.service.clone())
            .child(
                Element::new("pubsub", NS_PUBSUB)
                    .child(Element::new("create", NS_PUBSUB).attr("node", cfg.node.clone())),
            );
        // An existing node (conflict) is reused; any other refusal ends the run here, with the
        // service's own answer, rather than as a puzzling subscribe error.
        let r = publishers[0].iq(create).await?;
        if r.get_attr("type") != Some("result") && !is_conflict(&r) {
            return Err(ClientError::Protocol(format!("node creation refused: {r}")));
        }
        for s in subscribers.iter_mut() {
            let jid = s.jid().to_string();
            let sub = Element::new("iq", NS_CLIENT)
                .attr("type", "set")
                .attr("to", cfg.service.clone())
                .child(
                    Element::new("pubsub", NS_PUBSUB).child(
                        Element::new("subscribe", NS_PUBSUB)
                            .attr("node", cfg.node.clone())
                            .attr("jid", jid),
                    ),
                );
            let r = s.iq(sub).await?;
            if r.get_attr("type") != Some("result") {
                return Err(ClientError::Protocol(format!("subscribe refused: {r}")));
            }
        }
        // Drop the last-item notifications sent on subscribe.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for s in subscribers.iter_mut() {
            while s.recv(Duration::from_millis(1)).await.is_ok() {}
        }
    }
    let targets: Vec<String> = subscribers.iter().map(|s| s.jid().to_string()).collect();
    // In raw mode the window is shared: a message batch leaves it once every subscriber got it.
    let raw_window = (cfg.mode == Mode::Raw).then(|| {
        (
            Arc::new(Semaphore::new(cfg.window.max(1) * cfg.publishers)),
            cfg.subscribers as u32,
        )
    });
    let stats = Arc::new(Stats::new(raw_window));
    let stop = Arc::new(AtomicBool::new(false));
    let mut readers = Vec::new();
    for mut s in subscribers {
        let stats = stats.clone();
        let stop = stop.clone();
        readers.push(tokio::spawn(async move {
            loop {
                match s.recv(Duration::from_millis(200)).await {
                    Ok(m) => {
                        let now = Instant::now();
                        for id in event_ids(&m) {
                            let n = {
                                let mut seen = stats.seen.lock().unwrap_or_else(|e| e.into_inner());
                                let n = seen.entry(id.clone()).or_insert(0);
                                *n += 1;
                                *n
                            };
                            stats.record_event(&id, now);
                            if let Some((window, all)) = &stats.raw_window
                                && n == *all
                            {
                                window.add_permits(1);
                            }
                        }
                    }
                    Err(ClientError::Timeout(_)) if stop.load(Ordering::Relaxed) => break,
                    Err(ClientError::Timeout(_)) => {}
                    Err(_) => break,
                }
            }
            s.close().await;
        }));
    }
    let cpu_before = cpu_snapshot(&cfg.cpu_pids)?;
    let stream_before = StreamCounters::scrape(&cfg).await;
    let started = Instant::now();
    let sampling = Arc::new(AtomicBool::new(false));
    let samples = sampler(&cfg, started, sampling.clone());
    let deadline = cfg.duration.map(|d| started + d);
    let mut pubs = Vec::new();
    for (p, client) in publishers.into_iter().enumerate() {
        let cfg = cfg.clone();
        let stats = stats.clone();
        let targets = targets.clone();
        pubs.push(tokio::spawn(async move {
            publish_loop(p, client, cfg, stats, targets, deadline).await
        }));
    }
    let progress_task = progress.then(|| {
        let stats = stats.clone();
        let total = cfg.count * cfg.publishers as u64;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let done = stats.acked.load(Ordering::Relaxed);
                let width = 30;
                let filled = if total == 0 {
                    0
                } else {
                    (done * width / total.max(1)).min(width)
                } as usize;
                eprint!(
                    "\r[{}{}] {done}/{total} publishes, {} notifications",
                    "#".repeat(filled),
                    " ".repeat(width as usize - filled),
                    stats.received.load(Ordering::Relaxed)
                );
            }
        })
    });
    for p in pubs {
        let _ = p.await;
    }
    let publish_elapsed = started.elapsed();
    // Wait for stragglers: until every expected notification arrived, or the drain time passed.
    let expected = stats.published.load(Ordering::Relaxed) * cfg.subscribers as u64;
    let drain_until = Instant::now() + cfg.drain;
    while Instant::now() < drain_until && stats.received.load(Ordering::Relaxed) < expected {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    let cpu_after = cpu_snapshot(&cfg.cpu_pids)?;
    let stream = match stream_before {
        Some(b) => StreamCounters::scrape(&cfg).await.map(|a| a.since(b)),
        None => None,
    };
    sampling.store(true, Ordering::Relaxed);
    let samples = samples.await.unwrap_or_default();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let _ = r.await;
    }
    if let Some(t) = progress_task {
        t.abort();
        eprintln!();
    }
    // Each item should reach each subscriber once: anything beyond is a duplicate.
    let dup: u64 = stats
        .seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .map(|n| n.saturating_sub(cfg.subscribers as u32) as u64)
        .sum();
    stats.duplicates.store(dup, Ordering::Relaxed);
    Ok(Report::build(
        &cfg,
        &stats,
        publish_elapsed,
        elapsed,
        expected,
        Measured {
            cpu: cpu_before
                .iter()
                .zip(&cpu_after)
                .map(|(b, a)| a.saturating_sub(*b))
                .collect(),
            stream,
            samples,
        },
    ))
}

/// The message raw mode sends `to` one subscriber for item `id`.
fn raw_message(kind: RawMessage, to: &str, node: &str, id: &str, body: &Element) -> Element {
    let m = Element::new("message", NS_CLIENT)
        .attr("to", to.to_owned())
        .attr("type", "headline");
    match kind {
        RawMessage::Notification => m.child(
            Element::new("event", NS_EVENT).child(
                Element::new("items", NS_EVENT)
                    .attr("node", node.to_owned())
                    .child(
                        Element::new("item", NS_EVENT)
                            .attr("id", id.to_owned())
                            .child(body.clone()),
                    ),
            ),
        ),
        RawMessage::Minimal => m
            .child(Element::new("load", NS_LOAD).attr("id", id.to_owned()))
            .child(body.clone()),
    }
}

/// Item ids carried by an event notification or a raw load message.
fn event_ids(m: &Element) -> Vec<String> {
    if m.name() != "message" {
        return Vec::new();
    }
    if let Some(items) = m
        .get_child("event", NS_EVENT)
        .and_then(|e| e.get_child("items", NS_EVENT))
    {
        return items
            .children()
            .filter(|i| i.name() == "item")
            .filter_map(|i| i.get_attr("id").map(str::to_owned))
            .collect();
    }
    m.children()
        .find(|c| c.is("load", NS_LOAD))
        .and_then(|l| l.get_attr("id"))
        .map(|id| vec![id.to_owned()])
        .unwrap_or_default()
}

async fn publish_loop(
    p: usize,
    client: Client,
    cfg: LoadConfig,
    stats: Arc<Stats>,
    targets: Vec<String>,
    deadline: Option<Instant>,
) {
    let outbox = client.outbox();
    let window = Arc::new(Semaphore::new(cfg.window.max(1)));
    let acked_all = Arc::new(tokio::sync::Notify::new());
    let inflight: Arc<Mutex<HashMap<String, Instant>>> = Arc::new(Mutex::new(HashMap::new()));
    // The reader: IQ results release the window and give the ack latency.
    let reader = {
        let window = window.clone();
        let stats = stats.clone();
        let inflight = inflight.clone();
        let acked_all = acked_all.clone();
        let mut client = client;
        tokio::spawn(async move {
            loop {
                match client.recv(Duration::from_millis(200)).await {
                    Ok(el) if el.name() == "iq" => {
                        let Some(id) = el.get_attr("id") else {
                            continue;
                        };
                        let at = inflight
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .remove(id);
                        if let Some(at) = at {
                            if el.get_attr("type") == Some("result") {
                                stats.acked.fetch_add(1, Ordering::Relaxed);
                                let _ = stats
                                    .ack
                                    .lock()
                                    .unwrap_or_else(|e| e.into_inner())
                                    .record(at.elapsed().as_micros().max(1) as u64);
                            } else {
                                stats.errors.fetch_add(1, Ordering::Relaxed);
                            }
                            window.add_permits(1);
                            acked_all.notify_waiters();
                        }
                    }
                    Ok(_) => {}
                    Err(ClientError::Timeout(_)) => {
                        if Arc::strong_count(&inflight) == 1 {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            client.close().await;
        })
    };
    let body = payload(cfg.payload);
    let interval = cfg
        .rate
        .map(|r| Duration::from_secs_f64(1.0 / r.max(0.001)));
    let mut next = Instant::now();
    for seq in 0..cfg.count {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        match (interval, &stats.raw_window) {
            (Some(iv), _) => {
                next += iv;
                tokio::time::sleep_until(next.into()).await;
            }
            (None, Some((shared, _))) => {
                let Ok(permit) = shared.acquire().await else {
                    break;
                };
                permit.forget();
            }
            (None, None) => {
                let Ok(permit) = window.acquire().await else {
                    break;
                };
                permit.forget();
            }
        }
        let id = format!("p{p}-{seq}");
        let now = Instant::now();
        stats
            .sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), now);
        stats.published.fetch_add(1, Ordering::Relaxed);
        match cfg.mode {
            Mode::Pubsub => {
                inflight
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id.clone(), now);
                let iq = Element::new("iq", NS_CLIENT)
                    .attr("type", "set")
                    .attr("id", id.clone())
                    .attr("to", cfg.service.clone())
                    .child(
                        Element::new("pubsub", NS_PUBSUB).child(
                            Element::new("publish", NS_PUBSUB)
                                .attr("node", cfg.node.clone())
                                .child(
                                    Element::new("item", NS_PUBSUB)
                                        .attr("id", id.clone())
                                        .child(body.clone()),
                                ),
                        ),
                    );
                let mut xml = String::new();
                iq.write_to(&mut xml, NS_CLIENT);
                stats
                    .published_bytes
                    .fetch_add(xml.len() as u64, Ordering::Relaxed);
                if outbox.send_raw(xml).await.is_err() {
                    break;
                }
            }
            Mode::Raw => {
                // One message per subscriber, as a pubsub service would send; "acked" when written.
                let mut batch = String::new();
                for t in &targets {
                    let m = raw_message(cfg.raw_message, t, &cfg.node, &id, &body);
                    m.write_to(&mut batch, NS_CLIENT);
                }
                stats
                    .published_bytes
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                if outbox.send_raw(batch).await.is_err() {
                    break;
                }
                stats.acked.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    // Wait for the outstanding acknowledgements (bounded).
    let until = Instant::now() + Duration::from_secs(30);
    while !inflight
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .is_empty()
        && Instant::now() < until
    {
        tokio::select! {
            _ = acked_all.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
    }
    drop(inflight);
    let _ = reader.await;
}

#[cfg(test)]
mod tests;
