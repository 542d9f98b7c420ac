//! The embedded backend, the default: one redb database file under `data_dir`.
//!
//! Why redb: pure Rust (no C toolchain), copy-on-write B-trees with checksummed commits that
//! survive kill -9 and power loss once `commit` returns (Durability::Immediate fsyncs), ordered range
//! reads for "newest N" and RSM pages in O(page), and instant reopen (fjall replays its journal:
//! ~0.9 s; SQLite is slower on point reads). Measurements: shared notes, storage-servers.md.
//!
//! Keys are byte strings of `\0`-separated parts (XML forbids NUL in names and JIDs, so the
//! separator cannot occur inside a part); sequence numbers are big-endian so byte order is
//! publication order.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::failpoint::FailPoints;
use super::{ItemPage, ItemQuery, Store, StoreError, StoreResult, SubscriptionChange};
use crate::jid::{BareJid, Jid};
use crate::pubsub::model::{Affiliation, Item, NodeConfig, NodeRecord, ServiceId, Subscription};

pub(super) type Bytes = &'static [u8];
pub(super) const NODES: TableDefinition<Bytes, Bytes> = TableDefinition::new("nodes");
/// svc\0node -> next_seq (8 bytes BE) + item count (8 bytes BE)
pub(super) const NODE_META: TableDefinition<Bytes, Bytes> = TableDefinition::new("node_meta");
/// svc\0creator -> nodes created (8 bytes BE)
pub(super) const CREATORS: TableDefinition<Bytes, u64> = TableDefinition::new("creators");
/// svc\0node\0bare -> affiliation
pub(super) const AFFS: TableDefinition<Bytes, u8> = TableDefinition::new("affiliations");
/// svc\0bare\0node -> affiliation (index for a user's affiliations)
pub(super) const USER_AFFS: TableDefinition<Bytes, u8> = TableDefinition::new("user_affiliations");
/// svc\0node\0jid\0subid -> subscription (JSON)
pub(super) const SUBS: TableDefinition<Bytes, Bytes> = TableDefinition::new("subscriptions");
/// svc\0bare\0node\0jid\0subid -> () (index for a user's subscriptions)
pub(super) const USER_SUBS: TableDefinition<Bytes, ()> = TableDefinition::new("user_subscriptions");
/// svc\0node\0seq -> item (JSON)
pub(super) const ITEMS: TableDefinition<Bytes, Bytes> = TableDefinition::new("items");
/// svc\0node\0item-id -> seq
pub(super) const ITEM_IDS: TableDefinition<Bytes, u64> = TableDefinition::new("item_ids");

pub struct EmbeddedStore {
    db: Arc<Database>,
    /// Write requests for the writer thread (None once dropping).
    writes: Option<tokio::sync::mpsc::Sender<WriteRequest>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// `batch` fails a batch after its first entry, inside the transaction.
    fail_points: FailPoints,
}

type WriteOutput = Box<dyn std::any::Any + Send>;
type WriteJob = Box<dyn FnOnce(&redb::WriteTransaction) -> StoreResult<WriteOutput> + Send>;

struct WriteRequest {
    job: WriteJob,
    reply: tokio::sync::oneshot::Sender<StoreResult<WriteOutput>>,
}

/// Most write requests committed together.
const MAX_GROUP: usize = 512;

/// The group-commit writer: takes every write request queued at the moment, applies them in one
/// transaction and commits once (one fsync), then answers each. A request that fails (storage
/// error, corrupt record) aborts the transaction and fails the whole batch: nothing of it is
/// acknowledged, nothing of it is written.
fn writer_thread(db: Arc<Database>, mut rx: tokio::sync::mpsc::Receiver<WriteRequest>) {
    while let Some(first) = rx.blocking_recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let tx = match db.begin_write() {
            Ok(tx) => tx,
            Err(e) => {
                let e = err(e);
                for r in batch {
                    let _ = r.reply.send(Err(e.clone()));
                }
                continue;
            }
        };
        let mut done = Vec::with_capacity(batch.len());
        let mut failure = None;
        let mut pending = batch.into_iter();
        for r in pending.by_ref() {
            match (r.job)(&tx) {
                Ok(v) => done.push((r.reply, v)),
                // Found before the job wrote anything (`require_node` comes first): only this
                // request fails, the others of the group commit.
                Err(StoreError::NodeGone) => {
                    let _ = r.reply.send(Err(StoreError::NodeGone));
                }
                Err(e) => {
                    let _ = r.reply.send(Err(e.clone()));
                    failure = Some(e);
                    break;
                }
            }
        }
        let failure = match failure {
            Some(e) => Some(e),
            None => tx.commit().err().map(err),
        };
        match failure {
            None => {
                for (reply, v) in done {
                    let _ = reply.send(Ok(v));
                }
            }
            Some(e) => {
                for (reply, _) in done {
                    let _ = reply.send(Err(e.clone()));
                }
                for r in pending {
                    let _ = r.reply.send(Err(e.clone()));
                }
            }
        }
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        // Closing the queue ends the writer after it committed what it has; joining releases the
        // database file before a new instance may open it.
        self.writes.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

/// NodeGone unless the node exists. A write job calls it before it writes anything, so that the
/// failure leaves the group's transaction as it was.
fn require_node(tx: &redb::WriteTransaction, s: &str, node: &str) -> StoreResult<()> {
    let k = key(&[s.as_bytes(), node.as_bytes()]);
    match tx
        .open_table(NODES)
        .map_err(err)?
        .get(k.as_slice())
        .map_err(err)?
    {
        Some(_) => Ok(()),
        None => Err(StoreError::NodeGone),
    }
}

fn err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn corrupt<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p);
    }
    k
}

/// `key(parts) + \0`: the prefix of every key below these parts.
fn prefix(parts: &[&[u8]]) -> Vec<u8> {
    let mut k = key(parts);
    k.push(0);
    k
}

/// The exclusive upper bound of a prefix that ends with the `\0` separator.
fn prefix_end(p: &[u8]) -> Vec<u8> {
    let mut e = p.to_vec();
    if let Some(last) = e.last_mut() {
        *last = 1;
    }
    e
}

fn aff_code(a: Affiliation) -> u8 {
    match a {
        Affiliation::Owner => 1,
        Affiliation::Publisher => 2,
        Affiliation::PublishOnly => 3,
        Affiliation::Member => 4,
        Affiliation::None => 5,
        Affiliation::Outcast => 6,
    }
}

fn aff_from(c: u8) -> StoreResult<Affiliation> {
    Ok(match c {
        1 => Affiliation::Owner,
        2 => Affiliation::Publisher,
        3 => Affiliation::PublishOnly,
        4 => Affiliation::Member,
        5 => Affiliation::None,
        6 => Affiliation::Outcast,
        _ => return Err(corrupt(format!("affiliation code {c}"))),
    })
}

fn meta_decode(v: &[u8]) -> (u64, u64) {
    let mut a = [0u8; 8];
    let mut b = [0u8; 8];
    if v.len() == 16 {
        a.copy_from_slice(&v[..8]);
        b.copy_from_slice(&v[8..]);
    }
    (u64::from_be_bytes(a), u64::from_be_bytes(b))
}

fn meta_encode(next_seq: u64, count: u64) -> [u8; 16] {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&next_seq.to_be_bytes());
    v[8..].copy_from_slice(&count.to_be_bytes());
    v
}

fn last_part(k: &[u8]) -> &[u8] {
    match k.iter().rposition(|b| *b == 0) {
        Some(i) => &k[i + 1..],
        None => k,
    }
}

fn utf8(b: &[u8]) -> StoreResult<String> {
    String::from_utf8(b.to_vec()).map_err(corrupt)
}

impl EmbeddedStore {
    /// Opens (creating if needed) `data_dir/stratus.redb`.
    pub fn open(data_dir: &Path) -> StoreResult<EmbeddedStore> {
        std::fs::create_dir_all(data_dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", data_dir.display()))
        })?;
        let path = data_dir.join("stratus.redb");
        let db = Database::create(&path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        let tx = db.begin_write().map_err(err)?;
        {
            tx.open_table(NODES).map_err(err)?;
            tx.open_table(NODE_META).map_err(err)?;
            tx.open_table(CREATORS).map_err(err)?;
            tx.open_table(AFFS).map_err(err)?;
            tx.open_table(USER_AFFS).map_err(err)?;
            tx.open_table(SUBS).map_err(err)?;
            tx.open_table(USER_SUBS).map_err(err)?;
            tx.open_table(ITEMS).map_err(err)?;
            tx.open_table(ITEM_IDS).map_err(err)?;
        }
        tx.commit().map_err(err)?;
        let db = Arc::new(db);
        let (writes, rx) = tokio::sync::mpsc::channel(4 * MAX_GROUP);
        let writer = {
            let db = db.clone();
            std::thread::Builder::new()
                .name("stratus-store-writer".into())
                .spawn(move || writer_thread(db, rx))
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot start the writer thread: {e}"))
                })?
        };
        Ok(EmbeddedStore {
            db,
            writes: Some(writes),
            writer: Some(writer),
            fail_points: FailPoints::default(),
        })
    }

    /// Runs `f` in the writer's next transaction; Ok only once that transaction is committed
    /// (fsync), possibly together with other writes (group commit).
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let closed = || StoreError::Unavailable("the store is closing".into());
        let writes = self.writes.as_ref().ok_or_else(closed)?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job: WriteJob = Box::new(move |tx| f(tx).map(|v| Box::new(v) as WriteOutput));
        writes
            .send(WriteRequest { job, reply })
            .await
            .map_err(|_| closed())?;
        let out = answer.await.map_err(|_| closed())??;
        out.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StoreError::Corrupt("write result of an unexpected type".into()))
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::ReadTransaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read().map_err(err)?;
            f(&tx)
        })
        .await
        .map_err(err)?
    }
}

fn decode_item(v: &[u8]) -> StoreResult<Item> {
    serde_json::from_slice(v).map_err(corrupt)
}

/// Removes every key with `prefix` from a table.
fn remove_prefix<V: redb::Value + 'static>(
    table: &mut redb::Table<Bytes, V>,
    p: &[u8],
) -> StoreResult<Vec<Vec<u8>>> {
    let end = prefix_end(p);
    let keys: Vec<Vec<u8>> = table
        .range::<&[u8]>(p..end.as_slice())
        .map_err(err)?
        .map(|r| r.map(|(k, _)| k.value().to_vec()))
        .collect::<Result<_, _>>()
        .map_err(err)?;
    for k in &keys {
        table.remove(k.as_slice()).map_err(err)?;
    }
    Ok(keys)
}

mod items;
mod nodes;
mod subscriptions;

// Each operation is written with its kind, in nodes.rs, subscriptions.rs and items.rs.
#[async_trait]
impl Store for EmbeddedStore {
    async fn snapshot(&self) -> StoreResult<Option<Vec<u8>>> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            super::backup::dump(&db, &mut out)?;
            Ok(Some(out))
        })
        .await
        .map_err(err)?
    }

    fn ordered_writes(&self) -> bool {
        true
    }

    async fn create_node(
        &self,
        svc: &ServiceId,
        node: &NodeRecord,
        owner: &BareJid,
    ) -> StoreResult<bool> {
        self.create_node_in(svc, node, owner).await
    }

    async fn load_node(&self, svc: &ServiceId, node: &str) -> StoreResult<Option<NodeRecord>> {
        self.load_node_in(svc, node).await
    }

    async fn save_config(
        &self,
        svc: &ServiceId,
        node: &str,
        config: &NodeConfig,
    ) -> StoreResult<()> {
        self.save_config_in(svc, node, config).await
    }

    async fn delete_node(&self, svc: &ServiceId, node: &str) -> StoreResult<bool> {
        self.delete_node_in(svc, node).await
    }

    async fn node_names(
        &self,
        svc: &ServiceId,
        after: Option<&str>,
        max: usize,
    ) -> StoreResult<Vec<String>> {
        self.node_names_in(svc, after, max).await
    }

    async fn services(&self, after: Option<&ServiceId>, max: usize) -> StoreResult<Vec<ServiceId>> {
        self.services_in(after, max).await
    }

    async fn count_nodes_created_by(&self, svc: &ServiceId, creator: &str) -> StoreResult<u64> {
        self.count_nodes_created_by_in(svc, creator).await
    }

    async fn set_affiliations(
        &self,
        svc: &ServiceId,
        node: &str,
        changes: &[(BareJid, Affiliation)],
    ) -> StoreResult<()> {
        self.set_affiliations_in(svc, node, changes).await
    }

    async fn affiliations(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> StoreResult<Vec<(BareJid, Affiliation)>> {
        self.affiliations_in(svc, node).await
    }

    async fn user_affiliations(
        &self,
        svc: &ServiceId,
        jid: &BareJid,
    ) -> StoreResult<Vec<(String, Affiliation)>> {
        self.user_affiliations_in(svc, jid).await
    }

    async fn change_subscriptions(
        &self,
        svc: &ServiceId,
        node: &str,
        changes: &[SubscriptionChange],
    ) -> StoreResult<()> {
        self.change_subscriptions_in(svc, node, changes).await
    }

    async fn delete_subscription(
        &self,
        svc: &ServiceId,
        node: &str,
        jid: &Jid,
        subid: &str,
    ) -> StoreResult<bool> {
        self.delete_subscription_in(svc, node, jid, subid).await
    }

    async fn subscriptions(&self, svc: &ServiceId, node: &str) -> StoreResult<Vec<Subscription>> {
        self.subscriptions_in(svc, node).await
    }

    async fn user_subscriptions(
        &self,
        svc: &ServiceId,
        jid: &Jid,
    ) -> StoreResult<Vec<(String, Subscription)>> {
        self.user_subscriptions_in(svc, jid).await
    }

    async fn put_items(
        &self,
        svc: &ServiceId,
        node: &str,
        items: &[Item],
        max_items: Option<u64>,
    ) -> StoreResult<Vec<String>> {
        self.put_items_in(svc, node, items, max_items).await
    }

    async fn items(&self, svc: &ServiceId, node: &str, query: ItemQuery) -> StoreResult<ItemPage> {
        self.items_in(svc, node, query).await
    }

    async fn items_by_id(
        &self,
        svc: &ServiceId,
        node: &str,
        wanted: &[String],
    ) -> StoreResult<Vec<Item>> {
        self.items_by_id_in(svc, node, wanted).await
    }

    async fn delete_items(
        &self,
        svc: &ServiceId,
        node: &str,
        ids: &[String],
    ) -> StoreResult<Vec<String>> {
        self.delete_items_in(svc, node, ids).await
    }

    async fn purge_items(&self, svc: &ServiceId, node: &str) -> StoreResult<()> {
        self.purge_items_in(svc, node).await
    }

    #[cfg(test)]
    fn fail_points(&self) -> &FailPoints {
        &self.fail_points
    }
}
