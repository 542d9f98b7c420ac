//! Durable publishes on the embedded store, many at once across nodes: throughput and ack latency
//! percentiles with group commit (each publish returns only after its fsynced commit).
//!
//!   cargo bench --bench durable_publish [-- CONCURRENCY NODES TOTAL]

use std::sync::Arc;
use std::time::Instant;

use hdrhistogram::Histogram;
use stratus::jid::Jid;
use stratus::pubsub::model::ServiceId;
use stratus::pubsub::service::NoRoster;
use stratus::pubsub::{Limits, PubSub};
use stratus::storage::embedded::EmbeddedStore;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let concurrency = args.first().copied().unwrap_or(256);
    let nodes = args.get(1).copied().unwrap_or(64);
    let total = args.get(2).copied().unwrap_or(40_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(dir.path()).unwrap());
    let ps = Arc::new(PubSub::new(store, Limits::default(), Arc::new(NoRoster)));
    let owner = Jid::parse("alice@localhost/phone").unwrap();
    rt.block_on(async {
        for n in 0..nodes {
            ps.create(&ServiceId::Host, &owner, Some(&format!("n{n}")), None).await.unwrap();
        }
        let payload = format!("<entry xmlns='urn:bench'>{}</entry>", "x".repeat(100));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for t in 0..concurrency {
            let (ps, owner, payload) = (ps.clone(), owner.clone(), payload.clone());
            let per_task = total / concurrency;
            tasks.push(tokio::spawn(async move {
                let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
                for i in 0..per_task {
                    let node = format!("n{}", (t + i * concurrency) % nodes);
                    let at = Instant::now();
                    ps.publish(&ServiceId::Host, &owner, &node, vec![(None, payload.clone())]).await.unwrap();
                    h.record(at.elapsed().as_micros().max(1) as u64).unwrap();
                }
                h
            }));
        }
        let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for t in tasks {
            all.add(t.await.unwrap()).unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "durable publishes: {} in {secs:.2} s = {:.0}/s ({concurrency} concurrent, {nodes} nodes); ack p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            all.len(),
            all.len() as f64 / secs,
            all.value_at_quantile(0.5) as f64 / 1000.0,
            all.value_at_quantile(0.99) as f64 / 1000.0,
            all.max() as f64 / 1000.0
        );
    });
}
