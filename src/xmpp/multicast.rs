//! XEP-0033 multicast of host-service notifications. When the server of a group of subscribers
//! offers a multicast service (ejabberd's mod_multicast does), a notification for several of them
//! goes out as one stanza with their JIDs as `bcc` addresses and the server fans it out: the
//! server parses one stanza per publish instead of one per subscriber.
//!
//! Discovery (XEP-0033 section 2) runs once per recipient domain, in the background: the
//! notifications sent while it runs go one by one, as they do to servers without the service.
//! A service that refuses a notification bounces it (section 8). Every stanza sent through a
//! service is kept (bounded in time and bytes) under the id it was sent with, so that a refusal
//! never loses a notification: stratus resends it to each address the service did not deliver,
//! whether or not the bounce carries the addresses, and stops using a service that refused a
//! whole stanza until the next connection.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::component::Requests;
use crate::component::{NS_COMPONENT, Outbox};
use crate::jid::Jid;
use crate::xml::Element;

use super::forms::{self, NS_DATA};
use super::notify::NS_ADDRESS;
use super::{NS_DISCO_INFO, NS_DISCO_ITEMS};

/// Addresses per stanza when the service does not advertise its limit: what ejabberd accepts from
/// senders outside its own hosts (components included) by default.
pub const DEFAULT_LIMIT: usize = 20;
/// Addresses per stanza at most, whatever the service allows: XEP-0033 section 8 puts a
/// service's limit under 100, and ejabberd fanned 1,000 subscribers out faster from stanzas of
/// 100 addresses than of 500 (33-37k against 30-31k notifications/s); it also keeps stanzas far
/// under the servers' size limits.
pub const MAX_LIMIT: usize = 100;
/// Components of a server asked whether they are its multicast service.
const MAX_PROBES: usize = 24;
const DISCO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a publish answer waits for the multicast service to have fanned out its notification.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(2);
/// Domains remembered at most (each is one small entry).
const MAX_DOMAINS: usize = 100_000;
/// How long a stanza sent through a service is kept for a bounce: a service answers on the same
/// stream, in well under a second; a bounce later than this is resent from its own addresses
/// when it carries them.
const RETAIN_FOR: Duration = Duration::from_secs(30);
/// Bytes of kept stanzas at most; the oldest go first.
const RETAIN_BYTES: usize = 32 << 20;

/// A notification sent through a multicast service, as kept for its bounce.
#[derive(Debug, Clone)]
pub struct Sent {
    pub service: String,
    pub kind: &'static str,
    pub body: Arc<str>,
    pub to: Vec<Jid>,
    at: Instant,
}

impl Sent {
    fn bytes(&self) -> usize {
        self.body.len() + self.to.iter().map(|j| j.as_str().len() + 24).sum::<usize>()
    }
}

#[derive(Default)]
struct Retained {
    by_seq: HashMap<u64, Sent>,
    order: VecDeque<u64>,
    bytes: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Probing,
    Unsupported,
    Service { jid: String, limit: usize },
}

/// Which multicast service serves which recipient domain.
pub struct Multicast {
    own_domain: String,
    requests: Arc<Requests>,
    domains: Mutex<HashMap<String, State>>,
    /// Every recipient domain ever sent through a service, with that service: a bounce is only
    /// trusted from the service its addresses were sent to.
    used: Mutex<HashMap<String, String>>,
    /// Services that left a barrier unanswered.
    no_barrier: Mutex<HashSet<String>>,
    /// What was sent through services, by the sequence number in its id.
    retained: Mutex<Retained>,
    next_seq: AtomicU64,
}

impl Multicast {
    /// `requests`: the component's table of IQs waiting for answers (shared with PEP).
    pub fn new(own_domain: &str, requests: Arc<Requests>) -> Multicast {
        Multicast {
            own_domain: own_domain.to_owned(),
            requests,
            domains: Mutex::new(HashMap::new()),
            used: Mutex::new(HashMap::new()),
            no_barrier: Mutex::new(HashSet::new()),
            retained: Mutex::new(Retained::default()),
            next_seq: AtomicU64::new(1),
        }
    }

    /// Keeps a notification about to be sent through `service` until it can no longer bounce;
    /// returns the sequence number its id carries.
    pub fn retain(
        &self,
        service: &str,
        kind: &'static str,
        body: &Arc<str>,
        to: impl Iterator<Item = Jid>,
    ) -> u64 {
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let sent = Sent {
            service: service.to_owned(),
            kind,
            body: body.clone(),
            to: to.collect(),
            at: Instant::now(),
        };
        let now = sent.at;
        let mut r = self.retained.lock().unwrap_or_else(|e| e.into_inner());
        r.bytes += sent.bytes();
        r.by_seq.insert(seq, sent);
        r.order.push_back(seq);
        while let Some(&oldest) = r.order.front() {
            let expired = match r.by_seq.get(&oldest) {
                Some(s) => now.duration_since(s.at) > RETAIN_FOR || r.bytes > RETAIN_BYTES,
                None => true,
            };
            if !expired {
                break;
            }
            r.order.pop_front();
            if let Some(s) = r.by_seq.remove(&oldest) {
                r.bytes -= s.bytes();
            }
        }
        seq
    }

    /// The notification kept as `seq`, when it was sent through `service` (a bounce counts only
    /// from the service the stanza went to).
    pub fn take(&self, seq: u64, service: &str) -> Option<Sent> {
        let mut r = self.retained.lock().unwrap_or_else(|e| e.into_inner());
        if r.by_seq.get(&seq).is_none_or(|s| s.service != service) {
            return None;
        }
        let sent = r.by_seq.remove(&seq)?;
        r.bytes -= sent.bytes();
        Some(sent)
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, State>> {
        self.domains.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The multicast service and its address limit for recipients at `domain`, when known. The
    /// first call for a domain starts its discovery and answers None.
    pub fn service_for(self: &Arc<Self>, domain: &str, out: &Outbox) -> Option<(String, usize)> {
        let mut table = self.table();
        match table.get(domain) {
            Some(State::Service { jid, limit }) => return Some((jid.clone(), *limit)),
            Some(_) => return None,
            None => {}
        }
        if table.len() >= MAX_DOMAINS || domain == self.own_domain {
            return None;
        }
        table.insert(domain.to_owned(), State::Probing);
        drop(table);
        let (me, out, domain) = (self.clone(), out.clone(), domain.to_owned());
        tokio::spawn(async move {
            let state = me.discover(&domain, &out).await;
            match &state {
                State::Service { jid, limit } => info!(
                    "notifications to {domain} go through its multicast service {jid} \
                     (XEP-0033, up to {limit} addresses per stanza)"
                ),
                _ => info!("{domain} has no multicast service: notifications go one by one"),
            }
            if let State::Service { jid, .. } = &state {
                let mut used = me.used.lock().unwrap_or_else(|e| e.into_inner());
                if used.len() < MAX_DOMAINS {
                    used.insert(domain.clone(), jid.clone());
                }
            }
            me.table().insert(domain, state);
        });
        None
    }

    /// Starts discovery for the domain our own domain is a subdomain of (`example.org` for
    /// `pubsub.example.org`): the server that routes us, where most subscribers usually are.
    /// Done on connecting, so the first publishes after a start do not go one by one while
    /// discovery runs.
    pub fn discover_parent(self: &Arc<Self>, out: &Outbox) {
        if let Some(parent) = self.parent() {
            self.service_for(parent, out);
        }
    }

    /// The domain our own domain is a subdomain of: the server that routes us.
    fn parent(&self) -> Option<&str> {
        self.own_domain
            .split_once('.')
            .map(|(_, parent)| parent)
            .filter(|p| !p.is_empty())
    }

    /// True when notifications to `recipient` were ever sent through `service`.
    pub fn sent_through(&self, service: &str, recipient: &Jid) -> bool {
        self.used
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(recipient.domain())
            .is_some_and(|s| s == service)
    }

    /// Stops using `service` (it refused a notification) until the next connection.
    pub fn disable(&self, service: &str, why: &str) {
        let mut table = self.table();
        for state in table.values_mut() {
            if matches!(state, State::Service { jid, .. } if jid == service) {
                *state = State::Unsupported;
            }
        }
        warn!(
            "multicast service {service} refused a notification ({why}); \
             notifications through it go one by one until the next connection"
        );
    }

    /// Whether a publish answer must wait for `service` to fan out ([`Multicast::barrier`]). Not
    /// when the service is the server that routes us, on its own domain (the project's modules
    /// for Prosody and ejabberd): it fans a stanza out while reading it from our stream, before
    /// the next one, so the publish answer sent after the notification already reaches the
    /// publisher after the copies left, as a built-in service's answer does. A ping and its
    /// answer would only cost that server two more stanzas per publish.
    pub fn needs_barrier(&self, service: &str) -> bool {
        self.parent() != Some(service)
    }

    /// Completes once `service` has handled everything sent to it so far: it answers an IQ
    /// (any answer, even an error) only after the stanzas queued before it. Bounded by a timeout.
    /// A service that lets one go unanswered is not waited for again (its publishers are then
    /// answered at once, as without multicast). At once for a service that needs no barrier.
    pub async fn barrier(&self, out: &Outbox, service: &str) {
        if !self.needs_barrier(service) {
            return;
        }
        let unanswered = || self.no_barrier.lock().unwrap_or_else(|e| e.into_inner());
        if unanswered().contains(service) {
            return;
        }
        let iq = Element::new("iq", NS_COMPONENT)
            .attr("type", "get")
            .attr("from", self.own_domain.clone())
            .attr("to", service.to_owned())
            .child(Element::new("ping", super::NS_PING));
        if self.requests.send(out, iq, BARRIER_TIMEOUT).await.is_none()
            && unanswered().insert(service.to_owned())
        {
            warn!(
                "multicast service {service} did not answer within {BARRIER_TIMEOUT:?}: publish \
                 answers no longer wait for it"
            );
        }
    }

    /// Forgets what was discovered: a (re)connected server may have changed its services.
    pub fn reset(&self) {
        self.table().clear();
        self.no_barrier
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    async fn disco(&self, out: &Outbox, to: &str, ns: &str) -> Option<Element> {
        let iq = Element::new("iq", NS_COMPONENT)
            .attr("type", "get")
            .attr("from", self.own_domain.clone())
            .attr("to", to.to_owned())
            .child(Element::new("query", ns));
        let answer = self.requests.send(out, iq, DISCO_TIMEOUT).await?;
        if answer.get_attr("type") != Some("result") {
            return None;
        }
        answer.get_child("query", ns).cloned()
    }

    /// XEP-0033 section 2: the server itself, else one of the services it lists.
    async fn discover(&self, domain: &str, out: &Outbox) -> State {
        if let Some(info) = self.disco(out, domain, NS_DISCO_INFO).await
            && let Some(limit) = multicast_limit(&info)
        {
            return State::Service {
                jid: domain.to_owned(),
                limit,
            };
        }
        let Some(items) = self.disco(out, domain, NS_DISCO_ITEMS).await else {
            return State::Unsupported;
        };
        let candidates: Vec<String> = items
            .children()
            .filter(|i| i.name() == "item" && i.get_attr("node").is_none())
            .filter_map(|i| i.get_attr("jid"))
            .filter(|j| *j != self.own_domain && *j != domain && !j.contains(['@', '/']))
            .take(MAX_PROBES)
            .map(str::to_owned)
            .collect();
        for jid in candidates {
            if let Some(info) = self.disco(out, &jid, NS_DISCO_INFO).await
                && let Some(limit) = multicast_limit(&info)
            {
                return State::Service { jid, limit };
            }
        }
        State::Unsupported
    }
}

/// The addresses per message a disco#info answer allows, or None when it has no XEP-0033
/// support. Limits come from the XEP-0128 form of FORM_TYPE `http://jabber.org/protocol/address`
/// (field `message`); a number, or a word such as `infinite` for no limit.
pub fn multicast_limit(info: &Element) -> Option<usize> {
    let supported = info
        .children()
        .any(|f| f.name() == "feature" && f.get_attr("var") == Some(NS_ADDRESS));
    if !supported {
        return None;
    }
    let advertised = info
        .children()
        .filter(|x| x.is("x", NS_DATA))
        .map(forms::parse)
        .find(|(_, fields)| forms::form_type(fields) == Some(NS_ADDRESS))
        .and_then(|(_, fields)| fields.get("message").and_then(|v| v.first()).cloned());
    let limit = match advertised {
        None => DEFAULT_LIMIT,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) => n,
            Err(_) if v.trim().chars().all(|c| c.is_ascii_alphabetic()) => MAX_LIMIT,
            Err(_) => DEFAULT_LIMIT,
        },
    };
    // A limit under 2 makes multicast pointless.
    (limit >= 2).then_some(limit.min(MAX_LIMIT))
}

/// What a bounce of one of our multicast stanzas asks for: the notification resent to each
/// address the service did not deliver.
#[derive(Debug)]
pub struct Refusal {
    /// The addresses to resend to, one message each.
    pub to: Vec<Jid>,
    pub kind: &'static str,
    /// The notification's children, serialized in the component namespace.
    pub body: Arc<str>,
    /// The service refused the stanza as a whole (not just some addresses).
    pub whole: bool,
    /// The error condition.
    pub why: String,
}

/// Reads a bounce from `service` (XEP-0033 section 8); None when it is not one of ours. The
/// addresses come from what was kept of the stanza when it is still kept: a refusal without an
/// address list (Prosody's `st.error_reply` copies no children) loses nothing. A bounce that
/// lists addresses names those not delivered (`delivered='true'` ones were); only addresses the
/// stanza was sent to are resent. Without the kept copy, the bounce's own addresses are used,
/// each only when its domain was ever sent through that service.
pub fn refusal(bounce: &Element, mc: &Multicast, service: &str) -> Option<Refusal> {
    let (kind, seq) = super::notify::parse_multicast_id(bounce.get_attr("id")?)?;
    let why = bounce
        .get_child("error", NS_COMPONENT)
        .and_then(|e| e.children().next().map(|c| c.name().to_owned()))
        .unwrap_or_else(|| "error".to_owned());
    let listed: Option<Vec<Jid>> = bounce.get_child("addresses", NS_ADDRESS).map(|list| {
        list.children()
            .filter(|a| a.name() == "address")
            .filter(|a| matches!(a.get_attr("type"), Some("to" | "cc" | "bcc")))
            .filter(|a| a.get_attr("delivered") != Some("true"))
            .filter_map(|a| a.get_attr("jid").and_then(|j| Jid::parse(j).ok()))
            .collect()
    });
    if let Some(sent) = seq.and_then(|seq| mc.take(seq, service)) {
        let to: Vec<Jid> = match &listed {
            Some(listed) if !listed.is_empty() => {
                let mut to: Vec<Jid> = sent
                    .to
                    .iter()
                    .filter(|j| listed.contains(j))
                    .cloned()
                    .collect();
                to.dedup();
                to
            }
            _ => sent.to.clone(),
        };
        return Some(Refusal {
            whole: to.len() == sent.to.len(),
            to,
            kind: sent.kind,
            body: sent.body,
            why,
        });
    }
    let mut body = String::new();
    for child in bounce.children() {
        if child.is("addresses", NS_ADDRESS) || child.name() == "error" {
            continue;
        }
        child.write_to(&mut body, NS_COMPONENT);
    }
    Some(Refusal {
        to: listed
            .unwrap_or_default()
            .into_iter()
            .filter(|j| mc.sent_through(service, j))
            .collect(),
        kind,
        body: body.into(),
        whole: true,
        why,
    })
}

/// The messages resending a refused notification, one per address, from `own_domain`.
pub fn resend(r: &Refusal, own_domain: &str) -> String {
    let mut out = String::with_capacity(r.to.len() * (r.body.len() + 96));
    for jid in &r.to {
        out.push_str(&crate::xml::element::open_tag(
            "message",
            &[("from", own_domain), ("to", jid.as_str()), ("type", r.kind)],
        ));
        out.push_str(&r.body);
        out.push_str("</message>");
    }
    out
}

#[cfg(test)]
mod tests;
