//! stratus at scale: a store of NODES nodes, SUBS subscriptions and ITEMS items, against the
//! same shape a thousand times smaller. Reports the start-up time (opening the store and the
//! first answer), the resident memory per cached node and per cached subscription, and the
//! durable publish latency to nodes touched before (warm) and never touched (cold, read from the
//! store) in both sizes: O(1) in the number of nodes means the two sizes agree.
//!
//!   cargo bench --bench scale [-- NODES SUBS ITEMS]          (default 100000 1000000 1000000)
//!   STRATUS_TEST_AWS_ENDPOINT=http://127.0.0.1:5055 [STRATUS_TEST_DYNAMODB_ENDPOINT=...] \
//!     AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
//!     cargo bench --features aws --bench scale -- NODES SUBS ITEMS aws
//!
//! Run without `--bench` (`cargo test --bench scale`, as scripts/test.sh does) it checks the
//! scenario at 1,000 nodes instead: every node, subscription and item is where it should be.
//!
//! Half the nodes have no subscriber, the other half share SUBS among them, so that the memory
//! of a node and that of a subscription can be told apart; every node has ITEMS / NODES items of
//! 100 bytes. The data is written through the store's own batch operations (BATCH_LIMIT per
//! batch, 64 nodes at a time, 8 on aws, where each batch uploads its payloads at once and local
//! S3 servers answer one request at a time); publishes go through the core (PubSub::publish,
//! acknowledged only once durable), one at a time: 2,000 per case.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use stratus::jid::{BareJid, Jid};
use stratus::pubsub::model::{
    Item, NodeRecord, ServiceId, SubOptions, Subscription, SubscriptionState,
};
use stratus::pubsub::service::NoRoster;
use stratus::pubsub::{Limits, PubSub};
use stratus::storage::{BATCH_LIMIT, ItemQuery, Store, SubscriptionChange};

const OWNER: &str = "owner@scale.example";

fn rss_kib() -> u64 {
    stratus::load::process_rss_kib(std::process::id()).unwrap_or(0)
}

fn node_name(i: usize) -> String {
    format!("n{i:07}")
}

/// The store's contents: nodes, their subscriptions (odd nodes only) and items.
struct Shape {
    nodes: usize,
    subs_per_node: usize,
    items_per_node: usize,
}

impl Shape {
    fn new(nodes: usize, subs: usize, items: usize) -> Shape {
        let with_subs = (nodes / 2).max(1);
        Shape {
            nodes,
            subs_per_node: subs / with_subs,
            items_per_node: (items / nodes.max(1)).max(1),
        }
    }

    fn has_subs(i: usize) -> bool {
        i % 2 == 1
    }
}

async fn populate(store: Arc<dyn Store>, shape: &Shape, at_once: usize) {
    let owner = BareJid::parse(OWNER).unwrap();
    let svc = ServiceId::Host;
    let payload: Arc<str> = Arc::from(format!("<e xmlns='urn:scale'>{}</e>", "x".repeat(80)));
    let started = Instant::now();
    let (subs, items) = (shape.subs_per_node, shape.items_per_node);
    futures_util::stream::iter(0..shape.nodes)
        .map(|i| {
            let (store, owner, svc, payload) =
                (store.clone(), owner.clone(), svc.clone(), payload.clone());
            async move {
                let name = node_name(i);
                let record = NodeRecord {
                    name: name.clone(),
                    config: stratus::pubsub::model::NodeConfig {
                        max_items: stratus::pubsub::model::MaxItems::Count(1000),
                        ..stratus::pubsub::model::NodeConfig::host_default(256 * 1024)
                    },
                    created_ms: 1,
                    creator: OWNER.into(),
                };
                assert!(store.create_node(&svc, &record, &owner).await.unwrap());
                if Shape::has_subs(i) {
                    let all: Vec<SubscriptionChange> = (0..subs)
                        .map(|s| {
                            SubscriptionChange::Put(Subscription {
                                jid: Jid::parse(&format!("u{s}@scale.example/r")).unwrap(),
                                subid: format!("s{i}-{s}"),
                                state: SubscriptionState::Subscribed,
                                options: SubOptions::default(),
                            })
                        })
                        .collect();
                    for batch in all.chunks(BATCH_LIMIT) {
                        store
                            .change_subscriptions(&svc, &name, batch)
                            .await
                            .unwrap();
                    }
                }
                let all: Vec<Item> = (0..items)
                    .map(|k| Item {
                        id: format!("i{k}"),
                        publisher: OWNER.into(),
                        payload: payload.clone(),
                        published_ms: 1,
                    })
                    .collect();
                for batch in all.chunks(BATCH_LIMIT) {
                    store.put_items(&svc, &name, batch, None).await.unwrap();
                }
            }
        })
        .buffer_unordered(at_once)
        .for_each(|_| async {})
        .await;
    println!(
        "  populated {} nodes, {} subscriptions, {} items in {:.1} s",
        shape.nodes,
        shape.nodes / 2 * shape.subs_per_node,
        shape.nodes * shape.items_per_node,
        started.elapsed().as_secs_f64()
    );
}

fn service(store: Arc<dyn Store>) -> PubSub {
    let limits = Limits {
        max_subscriptions_per_node: 1 << 20,
        ..Limits::default()
    };
    PubSub::new(store, limits, Arc::new(NoRoster))
}

/// Durable publishes one at a time to the nodes `pick` names; the ack latency of each.
async fn publishes(ps: &PubSub, count: usize, pick: impl Fn(usize) -> usize) -> Histogram<u64> {
    let owner = Jid::parse(&format!("{OWNER}/bench")).unwrap();
    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    for n in 0..count {
        let node = node_name(pick(n));
        let t = Instant::now();
        ps.publish(
            &ServiceId::Host,
            &owner,
            &node,
            vec![(Some(format!("p{n}")), "<e xmlns='urn:scale'/>".into())],
        )
        .await
        .unwrap();
        h.record(t.elapsed().as_micros().max(1) as u64).unwrap();
    }
    h
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// A spread of distinct node indices, none touched before this call (a stride coprime with the
/// node count would also do; odd and even alike).
fn cold_pick(nodes: usize, offset: usize) -> impl Fn(usize) -> usize {
    move |n| (offset + n * 7919) % nodes
}

struct Figures {
    startup: Duration,
    node_kib: f64,
    sub_kib: f64,
    cold: Histogram<u64>,
    warm: Histogram<u64>,
}

/// Publishes measured per case: 2,000, or 200 in the checked run.
async fn measure(open: &dyn Fn() -> Arc<dyn Store>, shape: &Shape, count: usize) -> Figures {
    // Start-up: open the store and answer a first request (what stratus does before it serves).
    let before = rss_kib();
    let t = Instant::now();
    let store = open();
    let ps = service(store.clone());
    ps.node(&ServiceId::Host, &node_name(0)).await.unwrap();
    let startup = t.elapsed();
    // Memory: the nodes without subscribers, then those with, all into the core's cache. They
    // are read from the store once before, so that the store's own page cache (redb keeps the
    // pages it read) is in the baseline, not in the figures per node.
    let cached = shape.nodes.min(100_000);
    let svc = ServiceId::Host;
    for i in 0..cached {
        let name = node_name(i);
        store.load_node(&svc, &name).await.unwrap();
        store.affiliations(&svc, &name).await.unwrap();
        store.subscriptions(&svc, &name).await.unwrap();
    }
    let base = rss_kib();
    for i in (0..cached).filter(|i| !Shape::has_subs(*i)) {
        ps.node(&ServiceId::Host, &node_name(i)).await.unwrap();
    }
    let bare_nodes = rss_kib();
    for i in (0..cached).filter(|i| Shape::has_subs(*i)) {
        ps.node(&ServiceId::Host, &node_name(i)).await.unwrap();
    }
    let full = rss_kib();
    let half = (cached / 2).max(1) as f64;
    let node_kib = bare_nodes.saturating_sub(base) as f64 / half;
    let sub_kib = (full.saturating_sub(bare_nodes) as f64 - node_kib * half).max(0.0)
        / (half * shape.subs_per_node.max(1) as f64);
    println!(
        "  RSS {before} KiB before opening, {base} KiB open, {bare_nodes} KiB with {} nodes cached, \
         {full} KiB with all {cached} and their subscriptions",
        cached / 2
    );
    // Publishes: warm (the first 200 nodes, cached above), then cold (a fresh service: every
    // publish reads its node from the store first).
    let warm = publishes(&ps, count, |n| n % 200.min(shape.nodes)).await;
    drop(ps);
    drop(store);
    let cold_ps = service(open());
    let cold = publishes(&cold_ps, count, cold_pick(shape.nodes, 1)).await;
    Figures {
        startup,
        node_kib,
        sub_kib,
        cold,
        warm,
    }
}

/// The store holds what [`populate`] wrote: every node once, in order, with its subscriptions
/// and items.
async fn check(store: &dyn Store, shape: &Shape) {
    let svc = ServiceId::Host;
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .node_names(&svc, after.as_deref(), 1000)
            .await
            .unwrap();
        let Some(last) = page.last().cloned() else {
            break;
        };
        names.extend(page);
        after = Some(last);
    }
    assert_eq!(names, (0..shape.nodes).map(node_name).collect::<Vec<_>>());
    for i in 0..shape.nodes {
        let name = node_name(i);
        let subs = store.subscriptions(&svc, &name).await.unwrap();
        let want = if Shape::has_subs(i) {
            shape.subs_per_node
        } else {
            0
        };
        assert_eq!(subs.len(), want, "subscriptions of {name}");
        let page = store
            .items(&svc, &name, ItemQuery::Newest(1))
            .await
            .unwrap();
        assert_eq!(page.count, shape.items_per_node as u64, "items of {name}");
    }
    println!("  checked {} nodes", shape.nodes);
}

fn report(label: &str, shape: &Shape, f: &Figures) {
    println!(
        "{label}: {} nodes, {} subscriptions, {} items | start-up {:.1} ms | {:.2} KiB per cached node, \
         {:.3} KiB per cached subscription | publish warm p50 {:.2} ms p99 {:.2} ms | cold p50 {:.2} ms p99 {:.2} ms",
        shape.nodes,
        shape.nodes / 2 * shape.subs_per_node,
        shape.nodes * shape.items_per_node,
        f.startup.as_secs_f64() * 1000.0,
        f.node_kib,
        f.sub_kib,
        ms(&f.warm, 0.5),
        ms(&f.warm, 0.99),
        ms(&f.cold, 0.5),
        ms(&f.cold, 0.99),
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let num = |i: usize, d: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(d);
    // `cargo bench` passes --bench; `cargo test --bench scale` does not: a small, checked run.
    let smoke = !std::env::args().any(|a| a == "--bench");
    let scale = if smoke { 100 } else { 1 };
    let (nodes, subs, items) = (
        num(0, 100_000 / scale),
        num(1, 1_000_000 / scale),
        num(2, 1_000_000 / scale),
    );
    let backend = args.get(3).cloned().unwrap_or_else(|| "embedded".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (label, shape) in [
            (
                "small",
                Shape::new((nodes / 1000).max(2), subs / 1000, items / 1000),
            ),
            ("large", Shape::new(nodes, subs, items)),
        ] {
            println!("{label} ({backend}):");
            let dir = tempfile::tempdir().unwrap();
            let open = store_opener(&backend, dir.path(), label).await;
            let at_once = if backend == "aws" { 8 } else { 64 };
            populate(open(), &shape, at_once).await;
            if smoke {
                check(&*open(), &shape).await;
            }
            let f = measure(&*open, &shape, if smoke { 200 } else { 2000 }).await;
            report(label, &shape, &f);
        }
    });
}

type Opener = Box<dyn Fn() -> Arc<dyn Store>>;

async fn store_opener(backend: &str, dir: &std::path::Path, label: &str) -> Opener {
    match backend {
        "embedded" => {
            let dir = dir.to_owned();
            Box::new(move || {
                Arc::new(stratus::storage::embedded::EmbeddedStore::open(&dir).unwrap())
                    as Arc<dyn Store>
            })
        }
        #[cfg(feature = "aws")]
        "aws" => aws_opener(label).await,
        other => panic!("backend {other}: embedded, or aws (built with --features aws) ({label})"),
    }
}

#[cfg(feature = "aws")]
async fn aws_opener(label: &str) -> Opener {
    let endpoint = std::env::var("STRATUS_TEST_AWS_ENDPOINT")
        .expect("set STRATUS_TEST_AWS_ENDPOINT to an S3 + DynamoDB endpoint");
    let name = format!(
        "scale-{label}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis()
    );
    let cfg = stratus::config::AwsConfig {
        bucket: name.clone(),
        table: name,
        endpoint: Some(endpoint),
        s3_endpoint: std::env::var("STRATUS_TEST_S3_ENDPOINT").ok(),
        dynamodb_endpoint: std::env::var("STRATUS_TEST_DYNAMODB_ENDPOINT").ok(),
        path_style: true,
        ..Default::default()
    };
    let store = stratus::storage::aws::AwsStore::connect(&cfg)
        .await
        .unwrap();
    store.init().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    // The aws store is a client of remote tables: "opening" it again is connecting again, which
    // the SDK does lazily; the same client stands for it (start-up is then the first answer).
    Box::new(move || store.clone())
}
