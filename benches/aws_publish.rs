//! Publish latency on the aws backend next to the raw requests the same publish needs, sent by
//! hand to the same servers in the same run: what stratus adds on top of its storage round trips.
//!
//!   scripts/moto-server.py -p 5000 &   # or any S3 + DynamoDB endpoint
//!   STRATUS_TEST_AWS_ENDPOINT=http://127.0.0.1:5000 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
//!     cargo bench --bench aws_publish [-- COUNT]
//!
//! With separate servers (an S3 server and DynamoDB Local, `scripts/dynamodb-local.sh`), also set
//! `STRATUS_TEST_DYNAMODB_ENDPOINT` (and `STRATUS_TEST_S3_ENDPOINT` when S3 is not at the first).
//!
//! Each case runs COUNT operations (default 300) at 1 and at 64 in flight; with 64, each of the 64
//! workers publishes to its own node (one node's publishes are answered one at a time, as the
//! dispatcher orders them). The raw case makes exactly the requests of a publish of a new id to a
//! node below its max_items: GetItem (id), UpdateItem (reserve a sequence number) and PutObject
//! at once, then one TransactWriteItems (index entry, id entry, count, all conditional).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use stratus::config::AwsConfig;
use stratus::jid::Jid;
use stratus::pubsub::model::{MaxItems, NodeConfig, ServiceId};
use stratus::pubsub::service::NoRoster;
use stratus::pubsub::{Limits, PubSub};
use stratus::storage::aws::AwsStore;

const IN_FLIGHT: [usize; 2] = [1, 64];

struct Run {
    latency: Histogram<u64>,
    wall: Duration,
    /// Operations that failed (a timeout when the server cannot keep up); not in `latency`.
    failed: usize,
}

fn summary(name: &str, w: usize, r: &Run) {
    println!(
        "{name:<34} W={w:<3} n={:<5} p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  {:>7.0} op/s{}",
        r.latency.len(),
        r.latency.value_at_quantile(0.5) as f64 / 1000.0,
        r.latency.value_at_quantile(0.9) as f64 / 1000.0,
        r.latency.value_at_quantile(0.99) as f64 / 1000.0,
        r.latency.len() as f64 / r.wall.as_secs_f64(),
        if r.failed > 0 {
            format!("  ({} failed)", r.failed)
        } else {
            String::new()
        }
    );
}

/// Runs `count` operations, `w` at a time, operation i by worker i % w; records each latency.
async fn measure<F, Fut>(count: usize, w: usize, op: F) -> Run
where
    F: Fn(usize, usize) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let started = Instant::now();
    // Worker k runs its operations one after another; the workers run at once.
    let workers = (0..w).map(|k| {
        let op = &op;
        async move {
            let mut times = Vec::new();
            for i in (k..count).step_by(w) {
                let at = Instant::now();
                times.push(
                    op(k, i)
                        .await
                        .map(|()| at.elapsed().as_micros().max(1) as u64),
                );
            }
            times
        }
    });
    let all: Vec<Vec<Result<u64, String>>> = futures_util::stream::iter(workers)
        .buffer_unordered(w)
        .collect()
        .await;
    let wall = started.elapsed();
    let mut failed = 0;
    for t in all.into_iter().flatten() {
        match t {
            Ok(t) => latency.record(t).unwrap(),
            Err(_) => failed += 1,
        }
    }
    Run {
        latency,
        wall,
        failed,
    }
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn main() {
    let endpoint = std::env::var("STRATUS_TEST_AWS_ENDPOINT")
        .expect("set STRATUS_TEST_AWS_ENDPOINT to an S3 + DynamoDB endpoint");
    let s3_endpoint = std::env::var("STRATUS_TEST_S3_ENDPOINT").ok();
    let ddb_endpoint = std::env::var("STRATUS_TEST_DYNAMODB_ENDPOINT").ok();
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(300);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let name = format!("bench{}", std::process::id());
        let cfg = AwsConfig {
            bucket: name.clone(),
            table: name.clone(),
            region: "us-east-1".into(),
            endpoint: Some(endpoint.clone()),
            s3_endpoint: s3_endpoint.clone(),
            dynamodb_endpoint: ddb_endpoint.clone(),
            path_style: true,
        };
        let store = AwsStore::connect(&cfg).await.unwrap();
        store.init().await.unwrap();
        let payload = format!("<entry xmlns='urn:bench'>{}</entry>", "x".repeat(100));

        // The raw clients, on the same servers as the store's.
        let shared = |url: String| async move {
            aws_config::defaults(aws_config::BehaviorVersion::latest())
                .region(aws_config::Region::new("us-east-1"))
                .endpoint_url(url)
                .load()
                .await
        };
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(
                &shared(s3_endpoint.clone().unwrap_or(endpoint.clone())).await,
            )
            .force_path_style(true)
            .build(),
        );
        let ddb = aws_sdk_dynamodb::Client::new(
            &shared(ddb_endpoint.clone().unwrap_or(endpoint.clone())).await,
        );
        let table = name.as_str();
        for k in 0..IN_FLIGHT[1] {
            ddb.put_item()
                .table_name(table)
                .item("pk", s(format!("raw{k}")))
                .item("sk", s("meta"))
                .item("seq", AttributeValue::N("1".into()))
                .item("cnt", AttributeValue::N("0".into()))
                .send()
                .await
                .unwrap();
        }
        // `w` keeps the ids of one run apart from the other's.
        let raw_publish = |w: usize| {
            let (ddb, s3, payload) = (&ddb, &s3, &payload);
            move |k: usize, i: usize| async move {
                let pk = format!("raw{k}");
                let i = format!("{w}-{i}");
                let get = ddb
                    .get_item()
                    .table_name(table)
                    .key("pk", s(&pk))
                    .key("sk", s(format!("id|{i}")))
                    .consistent_read(true)
                    .send();
                let reserve = ddb
                    .update_item()
                    .table_name(table)
                    .key("pk", s(&pk))
                    .key("sk", s("meta"))
                    .update_expression("ADD seq :k")
                    .condition_expression("attribute_exists(pk) AND attribute_not_exists(gone)")
                    .expression_attribute_values(":k", AttributeValue::N("1".into()))
                    .return_values(aws_sdk_dynamodb::types::ReturnValue::AllNew)
                    .send();
                let upload = s3
                    .put_object()
                    .bucket(table)
                    .key(format!("raw/{k}/{i}"))
                    .body(payload.clone().into_bytes().into())
                    .send();
                let (got, reserved, uploaded) = tokio::join!(get, reserve, upload);
                got.map_err(|e| e.to_string())?;
                uploaded.map_err(|e| e.to_string())?;
                let seq = reserved.map_err(|e| e.to_string())?.attributes.unwrap()["seq"]
                    .as_n()
                    .unwrap()
                    .clone();
                let put = |sk: String, cond: &str| {
                    TransactWriteItem::builder()
                        .put(
                            Put::builder()
                                .table_name(table)
                                .item("pk", s(&pk))
                                .item("sk", s(sk))
                                .item("seq", AttributeValue::N(seq.clone()))
                                .item("obj", s(format!("raw/{k}/{i}")))
                                .condition_expression(cond)
                                .build()
                                .unwrap(),
                        )
                        .build()
                };
                ddb.transact_write_items()
                    .transact_items(put(format!("i|{seq:0>20}"), "attribute_not_exists(pk)"))
                    .transact_items(put(format!("id|{i}"), "attribute_not_exists(pk)"))
                    .transact_items(
                        TransactWriteItem::builder()
                            .update(
                                Update::builder()
                                    .table_name(table)
                                    .key("pk", s(&pk))
                                    .key("sk", s("meta"))
                                    .update_expression("ADD cnt :one")
                                    .condition_expression(
                                        "attribute_exists(pk) AND attribute_not_exists(gone)",
                                    )
                                    .expression_attribute_values(
                                        ":one",
                                        AttributeValue::N("1".into()),
                                    )
                                    .build()
                                    .unwrap(),
                            )
                            .build(),
                    )
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(())
            }
        };

        let limits = Limits {
            max_items_per_node: 1_000_000,
            ..Limits::default()
        };
        let ps = PubSub::new(Arc::new(store), limits, Arc::new(NoRoster));
        let owner = Jid::parse("alice@localhost/bench").unwrap();
        let below_max = NodeConfig {
            max_items: MaxItems::Count(1_000_000),
            ..NodeConfig::host_default(limits.max_payload_bytes)
        };
        for k in 0..IN_FLIGHT[1] {
            for (prefix, config) in [
                ("n", below_max.clone()),
                ("t", NodeConfig::host_default(limits.max_payload_bytes)),
            ] {
                ps.create(
                    &ServiceId::Host,
                    &owner,
                    Some(&format!("{prefix}{k}")),
                    Some(config),
                )
                .await
                .unwrap();
            }
        }
        // The max_items 10 nodes full before they are measured, so that every publish trims.
        let fill = (0..IN_FLIGHT[1]).map(|k| {
            let (ps, owner, payload) = (&ps, &owner, &payload);
            async move {
                for _ in 0..10 {
                    ps.publish(
                        &ServiceId::Host,
                        owner,
                        &format!("t{k}"),
                        vec![(None, payload.clone())],
                    )
                    .await
                    .unwrap();
                }
            }
        });
        futures_util::stream::iter(fill)
            .buffer_unordered(8)
            .collect::<Vec<()>>()
            .await;
        let publish = |prefix: &'static str| {
            let (ps, owner, payload) = (&ps, &owner, &payload);
            move |k: usize, _i: usize| async move {
                ps.publish(
                    &ServiceId::Host,
                    owner,
                    &format!("{prefix}{k}"),
                    vec![(None, payload.clone())],
                )
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
            }
        };
        println!(
            "S3 at {}, DynamoDB at {}; {count} operations per case, 100-byte payloads",
            s3_endpoint.as_deref().unwrap_or(&endpoint),
            ddb_endpoint.as_deref().unwrap_or(&endpoint)
        );
        for w in IN_FLIGHT {
            // Interleaved, so that a table growing through the run weighs on both alike.
            let raw = measure(count, w, raw_publish(w)).await;
            summary("raw requests of a publish", w, &raw);
            let stratus = measure(count, w, publish("n")).await;
            summary("stratus publish", w, &stratus);
            let trimmed = measure(count, w, publish("t")).await;
            summary("stratus publish, max_items 10 full", w, &trimmed);
            let ratio = |q: f64| {
                stratus.latency.value_at_quantile(q) as f64
                    / raw.latency.value_at_quantile(q) as f64
            };
            println!(
                "ratio stratus / raw at W={w}: p50 {:.2}x  p99 {:.2}x",
                ratio(0.5),
                ratio(0.99)
            );
        }
    });
}
