//! The storm's setup: the accounts' rosters (mutual presence subscriptions, made through the
//! server unless an earlier run left them) and their PEP items, and how a client leaves.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::super::{NS_PUBSUB, login_all, payload};
use super::{NODE_PREFIX, StormConfig, answer, bare_of, caps_query, item_id};
use crate::client::{Client, ClientError, NS_CLIENT};
use crate::xml::Element;

const NS_ROSTER: &str = "jabber:iq:roster";

/// The contacts of the roster with subscription `both`.
async fn mutual(c: &mut Client) -> Result<HashSet<String>, ClientError> {
    let r = c
        .iq(Element::new("iq", NS_CLIENT)
            .attr("type", "get")
            .child(Element::new("query", NS_ROSTER)))
        .await?;
    Ok(r.get_child("query", NS_ROSTER)
        .map(|q| {
            q.children()
                .filter(|i| i.get_attr("subscription") == Some("both"))
                .filter_map(|i| i.get_attr("jid").map(str::to_owned))
                .collect()
        })
        .unwrap_or_default())
}

/// Runs `f` on every client at once; returns the clients in order.
async fn each<F, Fut>(clients: Vec<Client>, f: F) -> Result<Vec<Client>, ClientError>
where
    F: Fn(usize, Client) -> Fut,
    Fut: std::future::Future<Output = Result<Client, ClientError>> + Send + 'static,
{
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(f(i, c)))
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(
            t.await
                .map_err(|e| ClientError::Protocol(e.to_string()))??,
        );
    }
    Ok(out)
}

/// Subscribes account i and its contacts to each other's presence: i asks each contact, and
/// approves every request it gets, until each contact approved (RFC 6121 sections 3.1, 3.1.3: a
/// contact that approved earlier is answered for by its server).
///
/// Each account asks only the contacts not mutual yet, and goes on approving until every
/// account has its approvals (a request may reach it after its own are in).
async fn befriend(
    mut c: Client,
    contacts: Vec<String>,
    caps: Arc<Element>,
    finished: Arc<AtomicU64>,
    users: u64,
    deadline: Instant,
) -> Result<Client, ClientError> {
    // Requests reach available resources only (RFC 6121 section 3.1.3).
    c.send_presence().await?;
    for to in &contacts {
        c.send(
            &Element::new("presence", NS_CLIENT)
                .attr("to", to.clone())
                .attr("type", "subscribe"),
        )
        .await?;
    }
    let mut approved = HashSet::new();
    let mut mine_done = false;
    loop {
        if !mine_done && approved.len() >= contacts.len() {
            mine_done = true;
            finished.fetch_add(1, Ordering::Relaxed);
        }
        if mine_done && finished.load(Ordering::Relaxed) >= users {
            break;
        }
        if Instant::now() >= deadline {
            return Err(ClientError::Protocol(format!(
                "{}: {} of {} contacts approved, {} of {users} accounts done",
                c.jid(),
                approved.len(),
                contacts.len(),
                finished.load(Ordering::Relaxed)
            )));
        }
        let el = match c.recv(Duration::from_millis(100)).await {
            Ok(el) => el,
            Err(ClientError::Timeout(_)) => continue,
            Err(e) => return Err(e),
        };
        let from = bare_of(el.get_attr("from").unwrap_or_default()).to_owned();
        match (el.name(), el.get_attr("type")) {
            ("presence", Some("subscribe")) => {
                c.send(
                    &Element::new("presence", NS_CLIENT)
                        .attr("to", from)
                        .attr("type", "subscribed"),
                )
                .await?;
            }
            ("presence", Some("subscribed")) if contacts.contains(&from) => {
                approved.insert(from);
            }
            ("iq", _) => {
                if let Some(r) = answer(&el, &caps) {
                    c.send(&r).await?;
                }
            }
            _ => {}
        }
    }
    Ok(c)
}

/// The rosters, made through the server unless an earlier run left them complete.
pub(super) async fn rosters(cfg: &StormConfig) -> Result<&'static str, ClientError> {
    let clients = login_all((0..cfg.users).map(|i| cfg.client(i, "setup"))).await?;
    let want: Arc<Vec<HashSet<String>>> = Arc::new(
        (0..cfg.users)
            .map(|i| {
                cfg.contacts_of(i)
                    .into_iter()
                    .map(|j| cfg.bare(j))
                    .collect()
            })
            .collect(),
    );
    // Per account, the contacts not yet mutual.
    let lacking: Arc<Vec<Mutex<Vec<String>>>> =
        Arc::new((0..cfg.users).map(|_| Mutex::default()).collect());
    let check = |want: Arc<Vec<HashSet<String>>>, lacking: Arc<Vec<Mutex<Vec<String>>>>| {
        move |i: usize, mut c: Client| {
            let want = want.clone();
            let lacking = lacking.clone();
            async move {
                let have = mutual(&mut c).await?;
                *lacking[i].lock().unwrap_or_else(|e| e.into_inner()) =
                    want[i].difference(&have).cloned().collect();
                Ok(c)
            }
        }
    };
    let all_mutual = |lacking: &[Mutex<Vec<String>>]| {
        lacking
            .iter()
            .all(|l| l.lock().unwrap_or_else(|e| e.into_inner()).is_empty())
    };
    let mut clients = each(clients, check(want.clone(), lacking.clone())).await?;
    let mut made = "kept";
    if !all_mutual(&lacking) {
        made = "made";
        let caps = Arc::new(caps_query(0));
        // Servers make a few hundred subscriptions a second (Prosody's internal storage rewrites
        // a roster file per change): a minute, and a second per 40 pairs.
        let pairs = (cfg.users * cfg.contacts / 2) as u64;
        let deadline = Instant::now() + Duration::from_secs(60 + pairs / 40);
        let finished = Arc::new(AtomicU64::new(0));
        let (users, asks) = (cfg.users as u64, lacking.clone());
        clients = each(clients, move |i, c| {
            let ask = std::mem::take(&mut *asks[i].lock().unwrap_or_else(|e| e.into_inner()));
            befriend(c, ask, caps.clone(), finished.clone(), users, deadline)
        })
        .await?;
        clients = each(clients, check(want.clone(), lacking.clone())).await?;
        if !all_mutual(&lacking) {
            return Err(ClientError::Protocol(
                "storm: the server did not make every subscription mutual".into(),
            ));
        }
    }
    // Every account's P items: the last item each node sends on presence.
    let body = Arc::new(payload(cfg.payload));
    let nodes = cfg.nodes;
    // Sixteen accounts publish at a time: ejabberd 23.01 refuses many concurrent node creations
    // (item-not-found, its log: a mnesia transaction aborted on a lock cycle).
    let publishing = Arc::new(Semaphore::new(16));
    let clients = each(clients, move |_, mut c| {
        let body = body.clone();
        let publishing = publishing.clone();
        async move {
            let _turn = publishing
                .acquire()
                .await
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            for k in 0..nodes {
                // The first publish creates the node (XEP-0163 section 3); a refused creation
                // (ejabberd, above) is tried again, a few times.
                let mut tries = 0;
                loop {
                    let r = c
                        .iq(Element::new("iq", NS_CLIENT).attr("type", "set").child(
                            Element::new("pubsub", NS_PUBSUB).child(
                                Element::new("publish", NS_PUBSUB)
                                    .attr("node", format!("{NODE_PREFIX}{k}"))
                                    .child(
                                        Element::new("item", NS_PUBSUB)
                                            .attr("id", item_id(k))
                                            .child((*body).clone()),
                                    ),
                            ),
                        ))
                        .await?;
                    if r.get_attr("type") == Some("result") {
                        break;
                    }
                    tries += 1;
                    if tries == 10 {
                        return Err(ClientError::Protocol(format!("publish refused: {r}")));
                    }
                    tokio::time::sleep(Duration::from_millis(50 * tries)).await;
                }
            }
            Ok(c)
        }
    })
    .await?;
    let leaving: Vec<_> = clients
        .into_iter()
        .map(|c| {
            let domain = cfg.domain.clone();
            tokio::spawn(async move { leave(c, &domain).await })
        })
        .collect();
    for l in leaving {
        let _ = l.await;
    }
    Ok(made)
}

/// Goes offline as a client leaving does (RFC 6121 section 4.5.1), and closes once the server
/// has taken the presence (an answered ping after it): ejabberd tells a component that a session
/// ended only through this presence, or through a contact online at that moment, and drops what
/// it had not read from a stream that closed.
pub(super) async fn leave(mut c: Client, domain: &str) {
    let _ = c
        .send(&Element::new("presence", NS_CLIENT).attr("type", "unavailable"))
        .await;
    let _ = c
        .iq(Element::new("iq", NS_CLIENT)
            .attr("type", "get")
            .attr("to", domain)
            .child(Element::new("ping", "urn:xmpp:ping")))
        .await;
    c.close().await;
}
