//! Backup and restore of the embedded store (`stratus backup`, `stratus restore`).
//!
//! A backup is every record of every table read in one redb read transaction: a consistent
//! snapshot (redb is MVCC) taken while the service keeps writing. The file is text, one record
//! per line (`table<TAB>key<TAB>value`, keys and byte values in base64), between a header naming
//! the format and a trailer with the record count, so a truncated file is refused on restore.

use std::io::{BufRead, Write};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, TableHandle};

use super::embedded::*;
use super::{StoreError, StoreResult};

const HEADER: &str = "stratus-embedded-backup 1";

fn err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn bad(line: usize, why: &str) -> StoreError {
    StoreError::Corrupt(format!("backup line {line}: {why}"))
}

/// How a table's values are written: bytes (base64), numbers (decimal), or nothing.
trait Text: redb::Value + 'static {
    fn write(v: Self::SelfType<'_>) -> String;
    fn read(s: &str) -> Option<Self::SelfType<'static>>;
}

impl Text for Bytes {
    fn write(v: &[u8]) -> String {
        B64.encode(v)
    }
    fn read(s: &str) -> Option<&'static [u8]> {
        // Restores run once per process: the few leaked buffers end with it.
        B64.decode(s).ok().map(|v| &*Vec::leak(v))
    }
}

impl Text for u64 {
    fn write(v: u64) -> String {
        v.to_string()
    }
    fn read(s: &str) -> Option<u64> {
        s.parse().ok()
    }
}

impl Text for u8 {
    fn write(v: u8) -> String {
        v.to_string()
    }
    fn read(s: &str) -> Option<u8> {
        s.parse().ok()
    }
}

impl Text for () {
    fn write(_: ()) -> String {
        String::new()
    }
    fn read(s: &str) -> Option<()> {
        s.is_empty().then_some(())
    }
}

fn dump_table<V: Text>(
    tx: &redb::ReadTransaction,
    table: TableDefinition<Bytes, V>,
    out: &mut dyn Write,
) -> StoreResult<u64> {
    let t = tx.open_table(table).map_err(err)?;
    let mut n = 0;
    for row in t.iter().map_err(err)? {
        let (k, v) = row.map_err(err)?;
        writeln!(
            out,
            "{}\t{}\t{}",
            table.name(),
            B64.encode(k.value()),
            V::write(v.value())
        )
        .map_err(err)?;
        n += 1;
    }
    Ok(n)
}

/// Writes every table of `db` as of one read transaction; returns the number of records.
pub(super) fn dump(db: &Database, out: &mut dyn Write) -> StoreResult<u64> {
    let tx = db.begin_read().map_err(err)?;
    writeln!(out, "{HEADER}").map_err(err)?;
    let n = dump_table(&tx, NODES, out)?
        + dump_table(&tx, NODE_META, out)?
        + dump_table(&tx, CREATORS, out)?
        + dump_table(&tx, AFFS, out)?
        + dump_table(&tx, USER_AFFS, out)?
        + dump_table(&tx, SUBS, out)?
        + dump_table(&tx, USER_SUBS, out)?
        + dump_table(&tx, ITEMS, out)?
        + dump_table(&tx, ITEM_IDS, out)?;
    writeln!(out, "end {n}").map_err(err)?;
    Ok(n)
}

fn insert<V: Text>(
    tx: &redb::WriteTransaction,
    table: TableDefinition<Bytes, V>,
    key: &[u8],
    value: &str,
    line: usize,
) -> StoreResult<()> {
    let v = V::read(value).ok_or_else(|| bad(line, "unreadable value"))?;
    tx.open_table(table)
        .map_err(err)?
        .insert(key, v)
        .map_err(err)?;
    Ok(())
}

/// Loads a backup into `data_dir`, which must hold no store yet; returns the number of records.
/// All or nothing: one write transaction, committed only after the trailer checked out.
pub fn restore(data_dir: &Path, input: &mut dyn BufRead) -> StoreResult<u64> {
    let path = data_dir.join("stratus.redb");
    if path.exists() {
        return Err(StoreError::Unavailable(format!(
            "{} exists: restore into an empty data directory (move the old store away first)",
            path.display()
        )));
    }
    std::fs::create_dir_all(data_dir).map_err(err)?;
    let mut lines = input.lines().enumerate();
    match lines.next() {
        Some((_, Ok(h))) if h == HEADER => {}
        _ => return Err(bad(1, "not a stratus embedded-store backup")),
    }
    let partial = path.with_extension("restoring");
    let _ = std::fs::remove_file(&partial);
    let db = Database::create(&partial).map_err(err)?;
    let tx = db.begin_write().map_err(err)?;
    let mut n = 0u64;
    let mut ended = None;
    for (i, line) in lines {
        let line = line.map_err(err)?;
        let no = i + 1;
        if let Some(count) = line.strip_prefix("end ") {
            ended = count.parse::<u64>().ok();
            break;
        }
        let mut parts = line.splitn(3, '\t');
        let (Some(table), Some(key), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad(no, "not table, key and value"));
        };
        let key = B64.decode(key).map_err(|_| bad(no, "key is not base64"))?;
        match table {
            "nodes" => insert(&tx, NODES, &key, value, no)?,
            "node_meta" => insert(&tx, NODE_META, &key, value, no)?,
            "creators" => insert(&tx, CREATORS, &key, value, no)?,
            "affiliations" => insert(&tx, AFFS, &key, value, no)?,
            "user_affiliations" => insert(&tx, USER_AFFS, &key, value, no)?,
            "subscriptions" => insert(&tx, SUBS, &key, value, no)?,
            "user_subscriptions" => insert(&tx, USER_SUBS, &key, value, no)?,
            "items" => insert(&tx, ITEMS, &key, value, no)?,
            "item_ids" => insert(&tx, ITEM_IDS, &key, value, no)?,
            other => return Err(bad(no, &format!("unknown table {other:?}"))),
        }
        n += 1;
    }
    if ended != Some(n) {
        return Err(StoreError::Corrupt(format!(
            "the backup is incomplete: {n} records read, its trailer says {ended:?}"
        )));
    }
    tx.commit().map_err(err)?;
    drop(db);
    std::fs::rename(&partial, &path).map_err(err)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::model::{Item, NodeConfig, NodeRecord, ServiceId};
    use crate::storage::embedded::EmbeddedStore;
    use crate::storage::{ItemQuery, Store};

    #[tokio::test]
    async fn a_backup_restores_to_the_same_store_and_a_cut_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("a")).unwrap();
        let owner = crate::jid::BareJid::parse("o@localhost").unwrap();
        let record = NodeRecord {
            name: "n".into(),
            config: NodeConfig::host_default(1024),
            created_ms: 1,
            creator: "o@localhost".into(),
        };
        store
            .create_node(&ServiceId::Host, &record, &owner)
            .await
            .unwrap();
        for i in 0..5 {
            let item = Item {
                id: format!("i{i}"),
                publisher: "o@localhost".into(),
                payload: format!("<x xmlns='urn:x'>{i}</x>").into(),
                published_ms: i,
            };
            store
                .put_item(&ServiceId::Host, "n", &item, None)
                .await
                .unwrap();
        }
        let snapshot = store.snapshot().await.unwrap().unwrap();
        let restored_dir = dir.path().join("b");
        let n = restore(&restored_dir, &mut snapshot.as_slice()).unwrap();
        assert!(n > 5, "{n}");
        let restored = EmbeddedStore::open(&restored_dir).unwrap();
        let page = restored
            .items(&ServiceId::Host, "n", ItemQuery::Newest(10))
            .await
            .unwrap();
        assert_eq!(page.count, 5);
        assert_eq!(
            restored.load_node(&ServiceId::Host, "n").await.unwrap(),
            Some(record)
        );
        // Into an existing store: refused; a cut file: refused, nothing left behind.
        assert!(restore(&restored_dir, &mut snapshot.as_slice()).is_err());
        let cut = &snapshot[..snapshot.len() - 10];
        let third = dir.path().join("c");
        assert!(restore(&third, &mut &cut[..]).is_err());
        assert!(!third.join("stratus.redb").exists());
    }
}
