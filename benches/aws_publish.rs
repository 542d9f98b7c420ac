//! Publish latency on the aws backend next to the raw S3 PUT + DynamoDB write latency of the same
//! servers, in the same run: what stratus adds on top of the storage round trips.
//!
//!   python3 -m moto.server -p 5000 &   # or any S3 + DynamoDB endpoint
//!   STRATUS_TEST_AWS_ENDPOINT=http://127.0.0.1:5000 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
//!     cargo bench --bench aws_publish [-- COUNT]

use std::sync::Arc;
use std::time::Instant;

use aws_sdk_dynamodb::types::AttributeValue;
use hdrhistogram::Histogram;
use stratus::config::AwsConfig;
use stratus::jid::Jid;
use stratus::pubsub::model::ServiceId;
use stratus::pubsub::service::NoRoster;
use stratus::pubsub::{Limits, PubSub};
use stratus::storage::aws::AwsStore;

fn summary(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<42} n={:<5} p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        h.len(),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.9) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0
    );
}

fn main() {
    let endpoint = std::env::var("STRATUS_TEST_AWS_ENDPOINT")
        .expect("set STRATUS_TEST_AWS_ENDPOINT to an S3 + DynamoDB endpoint");
    let count: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(500);
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
            s3_endpoint: std::env::var("STRATUS_TEST_S3_ENDPOINT").ok(),
            dynamodb_endpoint: std::env::var("STRATUS_TEST_DYNAMODB_ENDPOINT").ok(),
            path_style: true,
        };
        let store = AwsStore::connect(&cfg).await.unwrap();
        store.init().await.unwrap();
        let payload = format!("<entry xmlns='urn:bench'>{}</entry>", "x".repeat(100));

        // Raw: one S3 PUT and one DynamoDB PutItem, the storage floor of a publish.
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .load()
            .await;
        let s3 = aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&shared)
                .force_path_style(true)
                .build(),
        );
        let ddb = aws_sdk_dynamodb::Client::new(&shared);
        let mut raw = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for i in 0..count {
            let at = Instant::now();
            s3.put_object()
                .bucket(&name)
                .key(format!("raw/{i}"))
                .body(payload.clone().into_bytes().into())
                .send()
                .await
                .unwrap();
            ddb.put_item()
                .table_name(&name)
                .item("pk", AttributeValue::S("raw".into()))
                .item("sk", AttributeValue::S(format!("{i:020}")))
                .item("v", AttributeValue::S(payload.clone()))
                .send()
                .await
                .unwrap();
            raw.record(at.elapsed().as_micros().max(1) as u64).unwrap();
        }

        // The other requests a publish makes, alone: what each costs on this endpoint.
        let mut tx = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        let mut query = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for i in 0..count {
            let put = |sk: String| {
                aws_sdk_dynamodb::types::TransactWriteItem::builder()
                    .put(
                        aws_sdk_dynamodb::types::Put::builder()
                            .table_name(&name)
                            .item("pk", AttributeValue::S("rawtx".into()))
                            .item("sk", AttributeValue::S(sk))
                            .build()
                            .unwrap(),
                    )
                    .build()
            };
            let at = Instant::now();
            ddb.transact_write_items()
                .transact_items(put(format!("a{i:020}")))
                .transact_items(put(format!("b{i:020}")))
                .send()
                .await
                .unwrap();
            tx.record(at.elapsed().as_micros().max(1) as u64).unwrap();
            let at = Instant::now();
            ddb.query()
                .table_name(&name)
                .key_condition_expression("pk = :p AND begins_with(sk, :s)")
                .expression_attribute_values(":p", AttributeValue::S("rawtx".into()))
                .expression_attribute_values(":s", AttributeValue::S("a".into()))
                .limit(1)
                .send()
                .await
                .unwrap();
            query
                .record(at.elapsed().as_micros().max(1) as u64)
                .unwrap();
        }

        let ps = PubSub::new(Arc::new(store), Limits::default(), Arc::new(NoRoster));
        let owner = Jid::parse("alice@localhost/bench").unwrap();
        ps.create(&ServiceId::Host, &owner, Some("bench"), None)
            .await
            .unwrap();
        let mut publish = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for _ in 0..count {
            let at = Instant::now();
            ps.publish(
                &ServiceId::Host,
                &owner,
                "bench",
                vec![(None, payload.clone())],
            )
            .await
            .unwrap();
            publish
                .record(at.elapsed().as_micros().max(1) as u64)
                .unwrap();
        }
        println!("endpoint {endpoint}, {count} sequential operations each, 100-byte payloads");
        summary("raw S3 PutObject + DynamoDB PutItem", &raw);
        summary("raw TransactWriteItems (2 puts)", &tx);
        summary("raw Query (first of a prefix)", &query);
        summary("stratus publish (aws backend, max_items 10)", &publish);
    });
}
