//! The storage conformance suite: one plain async function per case, run against every backend by
//! [`store_conformance_tests!`], which gives each case its own named test per backend.

use std::sync::Arc;

use super::{ItemQuery, Store};
use crate::jid::{BareJid, Jid};
use crate::pubsub::model::{
    Affiliation, Item, NodeConfig, NodeRecord, ServiceId, SubOptions, Subscription,
    SubscriptionState,
};

mod batches;
mod races;
pub use batches::*;
pub use races::*;

fn jid(s: &str) -> Jid {
    Jid::parse(s).unwrap()
}

fn bare(s: &str) -> BareJid {
    BareJid::parse(s).unwrap()
}

fn record(name: &str, creator: &str) -> NodeRecord {
    NodeRecord {
        name: name.into(),
        config: NodeConfig::host_default(1024),
        created_ms: 1,
        creator: creator.into(),
    }
}

fn item(id: &str) -> Item {
    Item {
        id: id.into(),
        publisher: "alice@localhost".into(),
        payload: Arc::from(format!("<entry xmlns='urn:test'>{id}</entry>")),
        published_ms: 1,
    }
}

fn ids(items: &[Item]) -> Vec<&str> {
    items.iter().map(|i| i.id.as_str()).collect()
}

pub async fn create_load_delete_node(s: &dyn Store) {
    let svc = ServiceId::Host;
    let owner = jid("alice@localhost/phone");
    assert!(
        s.create_node(&svc, &record("n1", "alice@localhost"), &owner.to_bare())
            .await
            .unwrap(),
        "step: create"
    );
    assert!(
        !s.create_node(&svc, &record("n1", "bob@localhost"), &owner.to_bare())
            .await
            .unwrap(),
        "step: duplicate refused"
    );
    let loaded = s.load_node(&svc, "n1").await.unwrap().expect("step: load");
    assert_eq!(loaded.creator, "alice@localhost");
    assert_eq!(
        s.affiliations(&svc, "n1").await.unwrap(),
        vec![(bare("alice@localhost"), Affiliation::Owner)],
        "step: creator is owner (bare JID)"
    );
    assert_eq!(
        s.count_nodes_created_by(&svc, "alice@localhost")
            .await
            .unwrap(),
        1
    );
    // Another service has its own namespace of nodes.
    let pep = ServiceId::Pep(bare("bob@localhost"));
    assert!(
        s.load_node(&pep, "n1").await.unwrap().is_none(),
        "step: services are separate"
    );
    s.put_item(&svc, "n1", &item("a"), None).await.unwrap();
    s.put_subscription(&svc, "n1", &sub("bob@localhost/r", "s1"))
        .await
        .unwrap();
    assert!(s.delete_node(&svc, "n1").await.unwrap(), "step: delete");
    assert!(
        !s.delete_node(&svc, "n1").await.unwrap(),
        "step: delete absent is Ok(false)"
    );
    assert!(s.load_node(&svc, "n1").await.unwrap().is_none());
    // Re-created under the same name, nothing of the old node remains.
    assert!(
        s.create_node(
            &svc,
            &record("n1", "carol@localhost"),
            &bare("carol@localhost")
        )
        .await
        .unwrap()
    );
    assert_eq!(
        s.items(&svc, "n1", ItemQuery::Newest(10))
            .await
            .unwrap()
            .count,
        0,
        "step: no old items"
    );
    assert!(
        s.subscriptions(&svc, "n1").await.unwrap().is_empty(),
        "step: no old subscriptions"
    );
    assert!(
        s.user_subscriptions(&svc, &jid("bob@localhost"))
            .await
            .unwrap()
            .is_empty(),
        "step: index cleaned"
    );
    assert!(
        s.user_affiliations(&svc, &bare("alice@localhost"))
            .await
            .unwrap()
            .is_empty(),
        "step: aff index cleaned"
    );
    assert_eq!(
        s.count_nodes_created_by(&svc, "alice@localhost")
            .await
            .unwrap(),
        0
    );
}

pub async fn node_names_are_paged_in_order(s: &dyn Store) {
    let svc = ServiceId::Host;
    for n in ["c", "a", "b", "a/b"] {
        s.create_node(&svc, &record(n, "x@localhost"), &bare("x@localhost"))
            .await
            .unwrap();
    }
    s.create_node(
        &ServiceId::Pep(bare("x@localhost")),
        &record("zz", "x@localhost"),
        &bare("x@localhost"),
    )
    .await
    .unwrap();
    assert_eq!(
        s.node_names(&svc, None, 10).await.unwrap(),
        vec!["a", "a/b", "b", "c"]
    );
    assert_eq!(s.node_names(&svc, None, 2).await.unwrap(), vec!["a", "a/b"]);
    assert_eq!(
        s.node_names(&svc, Some("a/b"), 2).await.unwrap(),
        vec!["b", "c"]
    );
    assert_eq!(
        s.node_names(&svc, Some("c"), 2).await.unwrap(),
        Vec::<String>::new()
    );
}

/// `stratus export`'s walk: every service with nodes once, in key order, paged; escaping in
/// keys (a `|` or `%` in a JID) survives.
pub async fn services_are_listed_in_key_order(s: &dyn Store) {
    let peps = ["z@localhost", "a|b%7C@localhost", "m@localhost"];
    for (i, who) in peps.iter().enumerate() {
        for n in 0..=i {
            s.create_node(
                &ServiceId::Pep(bare(who)),
                &record(&format!("n{n}"), who),
                &bare(who),
            )
            .await
            .unwrap();
        }
    }
    s.create_node(
        &ServiceId::Host,
        &record("h", "x@localhost"),
        &bare("x@localhost"),
    )
    .await
    .unwrap();
    let mut want: Vec<ServiceId> = peps
        .iter()
        .map(|p| ServiceId::Pep(bare(p)))
        .chain([ServiceId::Host])
        .collect();
    want.sort_by_key(ServiceId::key);
    assert_eq!(s.services(None, 100).await.unwrap(), want);
    assert_eq!(s.services(None, 2).await.unwrap(), want[..2]);
    assert_eq!(s.services(Some(&want[1]), 2).await.unwrap(), want[2..4]);
    assert!(s.services(Some(&want[3]), 2).await.unwrap().is_empty());
}

fn sub(j: &str, subid: &str) -> Subscription {
    Subscription {
        jid: jid(j),
        subid: subid.into(),
        state: SubscriptionState::Subscribed,
        options: SubOptions::default(),
    }
}

pub async fn subscriptions_and_affiliations(s: &dyn Store) {
    let svc = ServiceId::Host;
    s.create_node(&svc, &record("n", "o@localhost"), &bare("o@localhost"))
        .await
        .unwrap();
    s.create_node(&svc, &record("m", "o@localhost"), &bare("o@localhost"))
        .await
        .unwrap();
    s.put_subscription(&svc, "n", &sub("bob@localhost/a", "1"))
        .await
        .unwrap();
    s.put_subscription(&svc, "n", &sub("bob@localhost/a", "2"))
        .await
        .unwrap();
    s.put_subscription(&svc, "m", &sub("bob@localhost", "3"))
        .await
        .unwrap();
    let mut pending = sub("carol@localhost", "4");
    pending.state = SubscriptionState::Pending;
    s.put_subscription(&svc, "n", &pending).await.unwrap();
    assert_eq!(s.subscriptions(&svc, "n").await.unwrap().len(), 3);
    let mut replaced = sub("bob@localhost/a", "1");
    replaced.options.deliver = Some(false);
    s.put_subscription(&svc, "n", &replaced).await.unwrap();
    let subs = s.subscriptions(&svc, "n").await.unwrap();
    assert_eq!(subs.len(), 3, "step: same jid+subid replaces");
    assert!(subs.contains(&replaced));
    let mut bobs = s
        .user_subscriptions(&svc, &jid("bob@localhost"))
        .await
        .unwrap();
    bobs.sort_by(|a, b| a.1.subid.cmp(&b.1.subid));
    assert_eq!(
        bobs.iter()
            .map(|(n, s)| (n.as_str(), s.subid.as_str()))
            .collect::<Vec<_>>(),
        vec![("n", "1"), ("n", "2"), ("m", "3")]
    );
    let full = s
        .user_subscriptions(&svc, &jid("bob@localhost/a"))
        .await
        .unwrap();
    assert_eq!(full.len(), 2, "step: full JID matches only itself");
    assert!(
        s.delete_subscription(&svc, "n", &jid("bob@localhost/a"), "2")
            .await
            .unwrap()
    );
    assert!(
        !s.delete_subscription(&svc, "n", &jid("bob@localhost/a"), "2")
            .await
            .unwrap()
    );
    assert_eq!(
        s.user_subscriptions(&svc, &jid("bob@localhost"))
            .await
            .unwrap()
            .len(),
        2
    );

    s.set_affiliation(&svc, "n", &bare("pub@localhost"), Affiliation::Publisher)
        .await
        .unwrap();
    s.set_affiliation(&svc, "m", &bare("pub@localhost"), Affiliation::Outcast)
        .await
        .unwrap();
    let mut affs = s
        .user_affiliations(&svc, &bare("pub@localhost"))
        .await
        .unwrap();
    affs.sort();
    assert_eq!(
        affs,
        vec![
            ("m".into(), Affiliation::Outcast),
            ("n".into(), Affiliation::Publisher)
        ]
    );
    s.set_affiliation(&svc, "n", &bare("pub@localhost"), Affiliation::None)
        .await
        .unwrap();
    assert_eq!(
        s.affiliations(&svc, "n").await.unwrap(),
        vec![(bare("o@localhost"), Affiliation::Owner)]
    );
    assert_eq!(
        s.user_affiliations(&svc, &bare("pub@localhost"))
            .await
            .unwrap()
            .len(),
        1
    );
}

pub async fn items_order_replace_trim_retract_purge(s: &dyn Store) {
    let svc = ServiceId::Host;
    s.create_node(&svc, &record("n", "o@localhost"), &bare("o@localhost"))
        .await
        .unwrap();
    for id in ["a", "b", "c"] {
        assert!(
            s.put_item(&svc, "n", &item(id), Some(3))
                .await
                .unwrap()
                .is_empty()
        );
    }
    // Republishing "a" replaces it and makes it the newest.
    assert!(
        s.put_item(&svc, "n", &item("a"), Some(3))
            .await
            .unwrap()
            .is_empty()
    );
    let page = s.items(&svc, "n", ItemQuery::Newest(10)).await.unwrap();
    assert_eq!(ids(&page.items), vec!["b", "c", "a"]);
    assert_eq!(page.count, 3);
    // Trimming removes the oldest.
    assert_eq!(
        s.put_item(&svc, "n", &item("d"), Some(3)).await.unwrap(),
        vec!["b"]
    );
    assert_eq!(
        s.put_item(&svc, "n", &item("e"), Some(2)).await.unwrap(),
        vec!["c", "a"]
    );
    let page = s.items(&svc, "n", ItemQuery::Newest(1)).await.unwrap();
    assert_eq!(ids(&page.items), vec!["e"], "step: last item");
    assert_eq!((page.count, page.first_index), (2, Some(1)));
    assert_eq!(
        ids(&s
            .items_by_id(&svc, "n", &["e".into(), "zz".into(), "d".into()])
            .await
            .unwrap()),
        vec!["e", "d"]
    );
    assert!(s.delete_item(&svc, "n", "d").await.unwrap());
    assert!(!s.delete_item(&svc, "n", "d").await.unwrap());
    assert_eq!(
        s.items(&svc, "n", ItemQuery::Newest(10))
            .await
            .unwrap()
            .count,
        1
    );
    s.purge_items(&svc, "n").await.unwrap();
    let page = s.items(&svc, "n", ItemQuery::Newest(10)).await.unwrap();
    assert!(page.items.is_empty());
    assert_eq!(page.count, 0);
    // Publishing after a purge works and counts from zero.
    s.put_item(&svc, "n", &item("f"), Some(2)).await.unwrap();
    assert_eq!(
        s.items(&svc, "n", ItemQuery::Newest(10))
            .await
            .unwrap()
            .count,
        1
    );
    // The stored payload comes back byte for byte.
    assert_eq!(
        s.items_by_id(&svc, "n", &["f".into()]).await.unwrap()[0],
        item("f")
    );
}

/// The bar for local backends: 10,000 items in one node, each returned exactly once, in order.
pub async fn paging_returns_every_item_once(s: &dyn Store) {
    paging_over(s, 10_000).await;
}

/// The same over 300 items, for backends behind a (slow, local) network server.
pub async fn paging_returns_every_item_once_300(s: &dyn Store) {
    paging_over(s, 300).await;
}

async fn paging_over(s: &dyn Store, total: u64) {
    let svc = ServiceId::Host;
    s.create_node(&svc, &record("big", "o@localhost"), &bare("o@localhost"))
        .await
        .unwrap();
    for i in 0..total {
        s.put_item(&svc, "big", &item(&format!("i{i:04}")), None)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s
            .items(&svc, "big", ItemQuery::After(after.clone(), 97))
            .await
            .unwrap();
        assert_eq!(page.count, total);
        if page.items.is_empty() {
            break;
        }
        after = page.items.last().map(|i| i.id.clone());
        seen.extend(page.items.into_iter().map(|i| i.id));
    }
    let expected: Vec<String> = (0..total).map(|i| format!("i{i:04}")).collect();
    assert_eq!(seen, expected, "forward paging");
    let mut back = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let page = s
            .items(&svc, "big", ItemQuery::Before(before.clone(), 101))
            .await
            .unwrap();
        if page.items.is_empty() {
            break;
        }
        before = page.items.first().map(|i| i.id.clone());
        let mut ids: Vec<String> = page.items.into_iter().map(|i| i.id).collect();
        ids.extend(back);
        back = ids;
    }
    assert_eq!(back, expected, "backward paging");
    let unknown = s
        .items(&svc, "big", ItemQuery::After(Some("nope".into()), 10))
        .await
        .unwrap();
    assert!(unknown.items.is_empty());
}

#[cfg(test)]
macro_rules! store_conformance_tests {
    ($backend:ident, $make:expr) => {
        store_conformance_tests!($backend, $make, paging_returns_every_item_once);
    };
    ($backend:ident, $make:expr, $paging:ident) => {
        mod $backend {
            use super::*;
            store_conformance_tests!(@case $make, create_load_delete_node, node_names_are_paged_in_order, services_are_listed_in_key_order,
                subscriptions_and_affiliations, items_order_replace_trim_retract_purge, batches_apply_whole,
                failed_batch_changes_nothing, writes_to_a_deleted_node_fail, same_id_writers_leave_one_item,
                concurrent_retracts_count_once, publish_racing_delete, cut_off_deletion_leaves_nothing,
                cut_off_publish_keeps_invariants, versions_move_with_every_change, lost_answers_keep_payloads,
                cut_off_purge_keeps_invariants,
                $paging);
        }
    };
    (@case $make:expr, $($case:ident),*) => {
        $(
            // A backend that cannot be reached fails each case with one line saying how to run
            // it (the aws backend without its local server), not with a panic.
            #[tokio::test]
            async fn $case() -> Result<(), String> {
                let (store, _guard) = $make?;
                super::$case(&*store).await;
                Ok(())
            }
        )*
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{embedded::EmbeddedStore, memory::MemoryStore};

    store_conformance_tests!(
        memory,
        Ok::<_, String>((Box::new(MemoryStore::default()) as Box<dyn Store>, ()))
    );
    store_conformance_tests!(embedded, {
        let dir = tempfile::tempdir().unwrap();
        Ok::<_, String>((
            Box::new(EmbeddedStore::open(dir.path()).unwrap()) as Box<dyn Store>,
            dir,
        ))
    });

    /// The aws backend against the local S3/DynamoDB server scripts/test.sh starts (moto): each
    /// case gets its own table and bucket.
    #[cfg(feature = "aws")]
    async fn aws_store() -> Result<(Box<dyn Store>, ()), String> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let endpoint =
            std::env::var("STRATUS_TEST_AWS_ENDPOINT").map_err(|_| AWS_HOW.to_owned())?;
        // Where the table and the items live on different servers (DynamoDB Local and an S3
        // server), each has its own variable.
        let own = |var: &str| std::env::var(var).ok().filter(|v| !v.is_empty());
        let name = format!(
            "t{}x{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let cfg = crate::config::AwsConfig {
            bucket: name.clone(),
            table: name,
            region: "us-east-1".into(),
            endpoint: Some(endpoint),
            s3_endpoint: own("STRATUS_TEST_S3_ENDPOINT"),
            dynamodb_endpoint: own("STRATUS_TEST_DYNAMODB_ENDPOINT"),
            path_style: true,
        };
        let store = crate::storage::aws::AwsStore::connect(&cfg).await.unwrap();
        store.init().await.unwrap();
        Ok((Box::new(store) as Box<dyn Store>, ()))
    }

    #[cfg(feature = "aws")]
    const AWS_HOW: &str = "the aws backend tests need a local S3 + DynamoDB server: run scripts/test.sh (it starts one), or start one (scripts/moto-server.py -p 5000) and set STRATUS_TEST_AWS_ENDPOINT=http://127.0.0.1:5000 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test";

    #[cfg(feature = "aws")]
    store_conformance_tests!(aws, aws_store().await, paging_returns_every_item_once_300);

    #[tokio::test]
    async fn embedded_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            s.create_node(
                &ServiceId::Host,
                &record("n", "o@localhost"),
                &bare("o@localhost"),
            )
            .await
            .unwrap();
            s.put_item(&ServiceId::Host, "n", &item("x"), None)
                .await
                .unwrap();
        }
        let s = EmbeddedStore::open(dir.path()).unwrap();
        assert_eq!(
            ids(&s
                .items(&ServiceId::Host, "n", ItemQuery::Newest(5))
                .await
                .unwrap()
                .items),
            vec!["x"]
        );
    }
}
