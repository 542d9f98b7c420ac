//! The login storm (`stratus-load --mode storm`): U accounts, each with C contacts (mutual
//! presence subscriptions, RFC 6121 section 3) and P PEP nodes with an item; every resource goes
//! offline, then all come back at once with caps (XEP-0115) asking `node+notify` for the P nodes.
//! Each resource is owed the last item of each node of each contact (XEP-0163 section 4.3.1,
//! `send_last_published_item = on_sub_and_presence`, the PEP default): the run measures the time
//! until every resource has every one of them, counts what is missing or came twice, the store
//! reads the pubsub service issued during the storm (`--metrics`, stratus's `/metrics`), and the
//! CPU of the server and of the service (`--cpu-pid`).
//!
//! Contacts form a ring: account i's contacts are i±1 .. i±C/2 (C even, C < U), so every account
//! has exactly C. The rosters are made once through the server (subscribe / subscribed, both
//! ways) and kept: a later run with the same prefix finds them and skips that step.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::{Notify, Semaphore};

use super::report::{CpuUse, Latency};
use super::{NS_EVENT, cpu_snapshot, hist, login};
use crate::client::{ClientConfig, ClientError, NS_CLIENT, TlsMode};
use crate::xml::Element;

mod setup;
use setup::{leave, rosters};

const NS_CAPS: &str = "http://jabber.org/protocol/caps";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const CAPS_NODE: &str = "urn:stratus:load:storm";
/// Node k of every account.
const NODE_PREFIX: &str = "urn:stratus:storm:";

#[derive(Debug, Clone, Serialize)]
pub struct StormConfig {
    pub server: String,
    pub domain: String,
    /// Accounts are PREFIX-u0 .. PREFIX-u(U-1); registered (XEP-0077) when missing.
    pub prefix: String,
    pub password: String,
    pub tls: TlsMode,
    pub tls_insecure: bool,
    /// U: accounts, one resource each.
    pub users: usize,
    /// C: contacts per account (even, fewer than U).
    pub contacts: usize,
    /// P: PEP nodes per account, one item each.
    pub nodes: usize,
    /// Payload bytes per item.
    pub payload: usize,
    /// Logins in progress at once during the storm (the rest wait for a slot).
    pub logins_in_flight: usize,
    /// How long the storm may take before the missing items are counted as missing.
    pub timeout: Duration,
    /// Storms in turn (the first one warms the service's caches).
    pub rounds: usize,
    /// host:port of the pubsub service's metrics listener (stratus `[http] listen`): its store
    /// reads during the storm are reported. None: not reported (the built-in services).
    pub metrics: Option<String>,
    pub cpu_pids: Vec<(String, u32)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StormReport {
    pub config: StormConfig,
    /// "made" (this run subscribed the contacts to each other) or "kept" (from an earlier run).
    pub rosters: &'static str,
    pub setup_s: f64,
    /// Each storm in turn: the first right after the setup, the later ones with the service warm.
    pub rounds: Vec<Round>,
}

/// One storm: every resource logs in at once.
#[derive(Debug, Clone, Serialize)]
pub struct Round {
    /// U x C x P: every resource, every contact, every node.
    pub expected: u64,
    pub received: u64,
    pub missing: u64,
    pub duplicates: u64,
    /// Items of the resource's own account (not counted in `expected`: XEP-0163 leaves it open).
    pub own: u64,
    /// Events that were none of the expected items (another item, another node).
    pub unexpected: u64,
    /// From the first login of the storm until every resource was logged in.
    pub logins_s: f64,
    /// From the first login of the storm until the last expected item arrived (None while some
    /// are missing).
    pub all_items_s: Option<f64>,
    /// Per resource: from its caps presence to its last expected item.
    pub per_resource: Latency,
    /// Store reads issued by the service during the storm, in all and by operation.
    pub storage_reads: Option<u64>,
    pub storage_reads_by_op: BTreeMap<String, u64>,
    /// CPU from the first login of the storm to the last item (or the timeout).
    pub cpu: Vec<CpuUse>,
}

impl StormConfig {
    fn client(&self, i: usize, resource: &str) -> ClientConfig {
        ClientConfig {
            addr: self.server.clone(),
            domain: self.domain.clone(),
            username: self.name(i),
            password: self.password.clone(),
            resource: resource.to_owned(),
            tls: self.tls,
            tls_insecure: self.tls_insecure,
        }
    }

    fn name(&self, i: usize) -> String {
        format!("{}-u{i}", self.prefix)
    }

    fn bare(&self, i: usize) -> String {
        format!("{}@{}", self.name(i), self.domain)
    }

    /// Account i's contacts: the ring's C/2 neighbours on each side.
    fn contacts_of(&self, i: usize) -> Vec<usize> {
        let u = self.users;
        (1..=self.contacts / 2)
            .flat_map(|k| [(i + k) % u, (i + u - k) % u])
            .collect()
    }

    /// Every roster entry the storm's accounts must have, as "account contact" lines of bare
    /// JIDs (both directions of each pair, subscription `both`): what `scripts/xmpp-server.sh
    /// rosters` writes into a server's storage, so that a large storm's setup finds its
    /// rosters instead of making them through c2s.
    pub fn roster_lines(&self) -> impl Iterator<Item = String> + '_ {
        (0..self.users).flat_map(move |i| {
            let me = self.bare(i);
            self.contacts_of(i)
                .into_iter()
                .map(move |j| format!("{me} {}", self.bare(j)))
        })
    }

    /// j is one of i's contacts: at most C/2 steps from it round the ring, either way.
    fn is_contact(&self, i: usize, j: usize) -> bool {
        let d = (j + self.users - i) % self.users;
        i != j && d.min(self.users - d) <= self.contacts / 2
    }

    pub fn check(&self) -> Result<(), ClientError> {
        if !self.contacts.is_multiple_of(2) || self.contacts >= self.users || self.nodes == 0 {
            return Err(ClientError::Protocol(format!(
                "storm: contacts must be even and fewer than users, nodes at least 1 \
                 (users {}, contacts {}, nodes {})",
                self.users, self.contacts, self.nodes
            )));
        }
        Ok(())
    }
}

/// The disco#info answer of every storm resource: caps asking each node's notifications.
fn caps_query(nodes: usize) -> Element {
    let mut q = Element::new("query", NS_DISCO_INFO).child(
        Element::new("identity", NS_DISCO_INFO)
            .attr("category", "client")
            .attr("type", "bot")
            .attr("name", "stratus-load"),
    );
    let mut features = vec![NS_CAPS.to_owned(), NS_DISCO_INFO.to_owned()];
    features.extend((0..nodes).map(|k| format!("{NODE_PREFIX}{k}+notify")));
    for f in features {
        q = q.child(Element::new("feature", NS_DISCO_INFO).attr("var", f));
    }
    q
}

fn bare_of(jid: &str) -> &str {
    jid.split('/').next().unwrap_or(jid)
}

fn reply(iq: &Element, kind: &str) -> Element {
    let mut r = Element::new("iq", NS_CLIENT).attr("type", kind);
    if let Some(id) = iq.get_attr("id") {
        r = r.attr("id", id);
    }
    if let Some(from) = iq.get_attr("from") {
        r = r.attr("to", from);
    }
    r
}

/// The answer to an IQ a storm or setup client receives: its caps for disco#info, a result for
/// a roster push (RFC 6121 section 2.1.6), service-unavailable for anything else it is asked.
fn answer(iq: &Element, caps: &Element) -> Option<Element> {
    match iq.get_attr("type") {
        Some("get") if iq.get_child("query", NS_DISCO_INFO).is_some() => {
            let mut q = caps.clone();
            if let Some(node) = iq
                .get_child("query", NS_DISCO_INFO)
                .and_then(|q| q.get_attr("node"))
            {
                q.set_attr("node", node);
            }
            Some(reply(iq, "result").child(q))
        }
        Some("set") => Some(reply(iq, "result")),
        Some("get") => Some(
            reply(iq, "error").child(
                Element::new("error", NS_CLIENT)
                    .attr("type", "cancel")
                    .child(Element::new(
                        "service-unavailable",
                        "urn:ietf:params:xml:ns:xmpp-stanzas",
                    )),
            ),
        ),
        _ => None,
    }
}

fn item_id(k: usize) -> String {
    format!("storm-{k}")
}

/// What the storm resources share.
struct Tally {
    started: Instant,
    /// Per account: (contact, node) pairs received.
    got: Vec<Mutex<HashSet<(usize, usize)>>>,
    received: AtomicU64,
    duplicates: AtomicU64,
    own: AtomicU64,
    unexpected: AtomicU64,
    logged_in: AtomicU64,
    logins_done: Mutex<Option<Duration>>,
    complete: AtomicU64,
    last: Mutex<Option<Duration>>,
    per_resource: Mutex<Histogram<u64>>,
    all: Notify,
}

impl Tally {
    /// An event reached account i's resource: counts each expected (contact, node) once.
    fn event(&self, cfg: &StormConfig, index: &HashMap<String, usize>, i: usize, m: &Element) {
        let Some(from) = m.get_attr("from").map(bare_of) else {
            return;
        };
        let Some(items) = m
            .get_child("event", NS_EVENT)
            .and_then(|e| e.get_child("items", NS_EVENT))
        else {
            return;
        };
        let k = items
            .get_attr("node")
            .and_then(|n| n.strip_prefix(NODE_PREFIX))
            .and_then(|k| k.parse::<usize>().ok())
            .filter(|k| *k < cfg.nodes);
        for item in items.children().filter(|c| c.name() == "item") {
            let contact = index.get(from).copied();
            match (contact, k) {
                (Some(j), Some(k)) if j == i && item.get_attr("id") == Some(&item_id(k)) => {
                    self.own.fetch_add(1, Ordering::Relaxed);
                }
                (Some(j), Some(k))
                    if item.get_attr("id") == Some(&item_id(k)) && cfg.is_contact(i, j) =>
                {
                    let mut got = self.got[i].lock().unwrap_or_else(|e| e.into_inner());
                    if !got.insert((j, k)) {
                        self.duplicates.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    self.received.fetch_add(1, Ordering::Relaxed);
                    if got.len() == cfg.contacts * cfg.nodes {
                        self.resource_complete(cfg);
                    }
                }
                _ => {
                    self.unexpected.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn resource_complete(&self, cfg: &StormConfig) {
        let done = self.complete.fetch_add(1, Ordering::Relaxed) + 1;
        if done == cfg.users as u64 {
            *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(self.started.elapsed());
            self.all.notify_one();
        }
    }
}

/// One resource of the storm: logs in when a slot frees, announces its caps, answers what it is
/// asked, and counts its events until told to stop.
/// What every resource of one storm shares.
struct Storm {
    cfg: Arc<StormConfig>,
    /// Bare JID -> account index.
    index: HashMap<String, usize>,
    resource: String,
    tally: Tally,
    logins: Semaphore,
    caps: Element,
    ver: String,
    stop: AtomicBool,
}

async fn storm_resource(storm: Arc<Storm>, i: usize) -> Result<(), ClientError> {
    let Storm {
        cfg,
        index,
        resource,
        tally,
        logins,
        caps,
        ver,
        stop,
    } = &*storm;
    let permit = logins
        .acquire()
        .await
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let mut c = login(&cfg.client(i, resource)).await?;
    drop(permit);
    if tally.logged_in.fetch_add(1, Ordering::Relaxed) + 1 == cfg.users as u64 {
        *tally.logins_done.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(tally.started.elapsed());
    }
    let online = Instant::now();
    c.send(
        &Element::new("presence", NS_CLIENT).child(
            Element::new("c", NS_CAPS)
                .attr("hash", "sha-1")
                .attr("node", CAPS_NODE)
                .attr("ver", ver.clone()),
        ),
    )
    .await?;
    let owed = (cfg.contacts * cfg.nodes) as u64;
    let mut recorded = owed == 0;
    if recorded {
        tally.resource_complete(cfg);
    }
    while !stop.load(Ordering::Relaxed) {
        let el = match c.recv(Duration::from_millis(200)).await {
            Ok(el) => el,
            Err(ClientError::Timeout(_)) => continue,
            Err(e) => return Err(e),
        };
        match el.name() {
            "iq" => {
                if let Some(r) = answer(&el, caps) {
                    c.send(&r).await?;
                }
            }
            "message" => {
                tally.event(cfg, index, i, &el);
                if !recorded
                    && tally.got[i].lock().unwrap_or_else(|e| e.into_inner()).len() as u64 == owed
                {
                    recorded = true;
                    let micros = online.elapsed().as_micros().max(1) as u64;
                    let _ = tally
                        .per_resource
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(micros);
                }
            }
            _ => {}
        }
    }
    leave(c, &cfg.domain).await;
    Ok(())
}

/// The store reads of stratus so far, by operation (its `/metrics`).
async fn storage_reads(addr: &str) -> Result<BTreeMap<String, u64>, ClientError> {
    Ok(parse_reads(&super::scrape(addr).await?))
}

/// `stratus_storage_operations_total{op="...",kind="read"} N` lines, summed by op.
fn parse_reads(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("stratus_storage_operations_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        if !labels.contains("kind=\"read\"") {
            continue;
        }
        let op = labels
            .split(',')
            .find_map(|l| l.strip_prefix("op=\""))
            .and_then(|o| o.strip_suffix('"'))
            .unwrap_or("?");
        if let Ok(v) = value.trim().parse::<u64>() {
            *out.entry(op.to_owned()).or_insert(0) += v;
        }
    }
    out
}

pub async fn run(cfg: StormConfig) -> Result<StormReport, ClientError> {
    cfg.check()?;
    cpu_snapshot(&cfg.cpu_pids)?;
    let setup = Instant::now();
    let made = rosters(&cfg).await?;
    let setup_s = setup.elapsed().as_secs_f64();
    let cfg = Arc::new(cfg);
    let mut rounds = Vec::new();
    for r in 0..cfg.rounds.max(1) {
        rounds.push(round(&cfg, r).await?);
    }
    Ok(StormReport {
        config: (*cfg).clone(),
        rosters: made,
        setup_s,
        rounds,
    })
}

async fn round(cfg: &Arc<StormConfig>, r: usize) -> Result<Round, ClientError> {
    let caps = caps_query(cfg.nodes);
    let ver = crate::pep::caps::sha1_ver(&caps)
        .ok_or_else(|| ClientError::Protocol("storm: caps do not hash".into()))?;
    let reads_before = match &cfg.metrics {
        Some(m) => Some(storage_reads(m).await?),
        None => None,
    };
    let cpu_before = cpu_snapshot(&cfg.cpu_pids)?;
    let storm = Arc::new(Storm {
        cfg: cfg.clone(),
        index: (0..cfg.users).map(|i| (cfg.bare(i), i)).collect(),
        resource: format!("storm{r}"),
        tally: Tally {
            started: Instant::now(),
            got: (0..cfg.users).map(|_| Mutex::default()).collect(),
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            own: AtomicU64::new(0),
            unexpected: AtomicU64::new(0),
            logged_in: AtomicU64::new(0),
            logins_done: Mutex::new(None),
            complete: AtomicU64::new(0),
            last: Mutex::new(None),
            per_resource: Mutex::new(hist()),
            all: Notify::new(),
        },
        logins: Semaphore::new(cfg.logins_in_flight.max(1)),
        caps,
        ver,
        stop: AtomicBool::new(false),
    });
    let tally = &storm.tally;
    let tasks: Vec<_> = (0..cfg.users)
        .map(|i| tokio::spawn(storm_resource(storm.clone(), i)))
        .collect();
    let _ = tokio::time::timeout(cfg.timeout, tally.all.notified()).await;
    let cpu_after = cpu_snapshot(&cfg.cpu_pids)?;
    let reads_after = match &cfg.metrics {
        Some(m) => Some(storage_reads(m).await?),
        None => None,
    };
    storm.stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for t in tasks {
        match t.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e.to_string()),
            Err(e) => failures.push(e.to_string()),
        }
    }
    if let Some(first) = failures.first() {
        return Err(ClientError::Protocol(format!(
            "storm: {} of {} resources failed; first: {first}",
            failures.len(),
            cfg.users
        )));
    }
    let by_op: BTreeMap<String, u64> = match (&reads_before, &reads_after) {
        (Some(b), Some(a)) => a
            .iter()
            .map(|(op, n)| (op.clone(), n - b.get(op).copied().unwrap_or(0).min(*n)))
            .filter(|(_, n)| *n > 0)
            .collect(),
        _ => BTreeMap::new(),
    };
    let expected = (cfg.users * cfg.contacts * cfg.nodes) as u64;
    let received = tally.received.load(Ordering::Relaxed);
    let all_items = *tally.last.lock().unwrap_or_else(|e| e.into_inner());
    Ok(Round {
        expected,
        received,
        missing: expected - received.min(expected),
        duplicates: tally.duplicates.load(Ordering::Relaxed),
        own: tally.own.load(Ordering::Relaxed),
        unexpected: tally.unexpected.load(Ordering::Relaxed),
        logins_s: tally
            .logins_done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map_or(f64::NAN, |d| d.as_secs_f64()),
        all_items_s: all_items.map(|d| d.as_secs_f64()),
        per_resource: Latency::of(&tally.per_resource.lock().unwrap_or_else(|e| e.into_inner())),
        storage_reads: reads_after.as_ref().map(|_| by_op.values().sum()),
        storage_reads_by_op: by_op,
        cpu: cfg
            .cpu_pids
            .iter()
            .zip(cpu_before.iter().zip(&cpu_after))
            .map(|((name, pid), (b, a))| {
                let used = a.saturating_sub(*b).as_secs_f64();
                CpuUse {
                    name: name.clone(),
                    pid: *pid,
                    cpu_s: used,
                    us_per_notification: if received == 0 {
                        0.0
                    } else {
                        used * 1e6 / received as f64
                    },
                }
            })
            .collect(),
    })
}

impl StormReport {
    pub fn table(&self) -> String {
        let c = &self.config;
        let mut s = format!(
            "login storm: {} accounts x {} contacts x {} nodes (rosters {}, setup {:.1} s)\n",
            c.users, c.contacts, c.nodes, self.rosters, self.setup_s
        );
        for (r, round) in self.rounds.iter().enumerate() {
            s += &format!("round {}:\n{}", r + 1, round.table());
        }
        s
    }

    /// True when every round delivered every last item once.
    pub fn complete(&self) -> bool {
        self.rounds
            .iter()
            .all(|r| r.missing == 0 && r.duplicates == 0)
    }
}

impl Round {
    fn table(&self) -> String {
        let mut s = format!(
            "  last items: {} of {} ({} missing, {} duplicated, {} own, {} unexpected)\n",
            self.received, self.expected, self.missing, self.duplicates, self.own, self.unexpected
        );
        s += &format!(
            "  all logged in after {:.2} s; every last item after {}\n",
            self.logins_s,
            self.all_items_s
                .map_or("- (some missing)".to_owned(), |t| format!("{t:.2} s"))
        );
        s += &format!(
            "  per resource, caps presence -> its last item: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms\n",
            self.per_resource.p50_ms, self.per_resource.p99_ms, self.per_resource.max_ms
        );
        match self.storage_reads {
            Some(n) => {
                s += &format!("  store reads: {n}");
                for (op, k) in &self.storage_reads_by_op {
                    s += &format!(" {op}={k}");
                }
                s.push('\n');
            }
            None => s += "  store reads: not measured (no --metrics)\n",
        }
        for u in &self.cpu {
            s += &format!(
                "  CPU {}: {:.2} s ({:.1} us per last item)\n",
                u.name, u.cpu_s, u.us_per_notification
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(users: usize, contacts: usize) -> StormConfig {
        StormConfig {
            server: String::new(),
            domain: "h".into(),
            prefix: "s".into(),
            password: String::new(),
            tls: TlsMode::Never,
            tls_insecure: false,
            users,
            contacts,
            nodes: 1,
            payload: 1,
            logins_in_flight: 1,
            timeout: Duration::from_secs(1),
            rounds: 1,
            metrics: None,
            cpu_pids: Vec::new(),
        }
    }

    #[test]
    fn the_ring_gives_everyone_c_distinct_mutual_contacts() {
        let c = cfg(7, 4);
        for i in 0..7 {
            let mine: HashSet<usize> = c.contacts_of(i).into_iter().collect();
            assert_eq!(mine.len(), 4, "{i}: {mine:?}");
            assert!(!mine.contains(&i));
            for j in 0..7 {
                assert_eq!(c.is_contact(i, j), mine.contains(&j), "{i} -> {j}");
            }
            for &j in &mine {
                assert!(c.contacts_of(j).contains(&i), "{i} -> {j} is one-way");
            }
        }
        assert!(cfg(4, 4).check().is_err() && cfg(5, 3).check().is_err());
    }

    #[test]
    fn reads_are_summed_by_operation_from_the_metrics_text() {
        let text = "# TYPE stratus_storage_operations counter\n\
            stratus_storage_operations_total{op=\"items\",kind=\"read\"} 3\n\
            stratus_storage_operations_total{op=\"put_items\",kind=\"write\"} 9\n\
            stratus_storage_operations_total{op=\"node_names\",kind=\"read\"} 2\n";
        let reads = parse_reads(text);
        assert_eq!(
            reads,
            BTreeMap::from([("items".to_owned(), 3), ("node_names".to_owned(), 2)])
        );
    }
}
