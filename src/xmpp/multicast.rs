//! XEP-0033 multicast of host-service notifications. When the server of a group of subscribers
//! offers a multicast service (ejabberd's mod_multicast does), a notification for several of them
//! goes out as one stanza with their JIDs as `bcc` addresses and the server fans it out: the
//! server parses one stanza per publish instead of one per subscriber.
//!
//! Discovery (XEP-0033 section 2) runs once per recipient domain, in the background: the
//! notifications sent while it runs go one by one, as they do to servers without the service.
//! A service that refuses a notification bounces it (section 8); stratus then resends it to each
//! address itself and stops using that service until the next connection.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
        }
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

/// The notification inside a bounced multicast message, as messages to each of its addresses
/// that `allowed` accepts, and the error condition; None when `bounce` is not one of ours.
pub fn resend_bounce(
    bounce: &Element,
    own_domain: &str,
    allowed: impl Fn(&Jid) -> bool,
) -> Option<(String, String)> {
    let kind = super::notify::multicast_kind(bounce.get_attr("id")?)?;
    let addresses = bounce.get_child("addresses", NS_ADDRESS)?;
    let why = bounce
        .get_child("error", NS_COMPONENT)
        .and_then(|e| e.children().next().map(|c| c.name().to_owned()))
        .unwrap_or_else(|| "error".to_owned());
    let mut body = String::new();
    for child in bounce.children() {
        if child.is("addresses", NS_ADDRESS) || child.name() == "error" {
            continue;
        }
        child.write_to(&mut body, NS_COMPONENT);
    }
    let mut out = String::new();
    for a in addresses.children().filter(|a| a.name() == "address") {
        let (Some(jid), Some("to" | "cc" | "bcc")) = (a.get_attr("jid"), a.get_attr("type")) else {
            continue;
        };
        if a.get_attr("delivered") == Some("true") {
            continue;
        }
        let Ok(jid) = Jid::parse(jid) else {
            continue;
        };
        if !allowed(&jid) {
            continue;
        }
        out.push_str(&crate::xml::element::open_tag(
            "message",
            &[
                ("from", own_domain),
                ("to", &jid.to_string()),
                ("type", kind),
            ],
        ));
        out.push_str(&body);
        out.push_str("</message>");
    }
    Some((out, why))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pubsub::model::{Item, NotificationType, ServiceId};
    use crate::pubsub::notify::{Event, Notification, Recipient};
    use crate::xmpp::notify::{Body, render_multicast};

    fn parse_one(xml: &str) -> Element {
        crate::xml::reader::parse_element(xml, crate::xml::reader::Limits::default()).unwrap()
    }

    fn info(extra: &str) -> Element {
        parse_one(&format!(
            "<query xmlns='{NS_DISCO_INFO}'><identity category='service' type='multicast'/>\
             <feature var='{NS_ADDRESS}'/>{extra}</query>"
        ))
    }

    fn limits_form(value: &str) -> String {
        format!(
            "<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>\
             <value>{NS_ADDRESS}</value></field><field var='message'><value>{value}</value>\
             </field></x>"
        )
    }

    #[test]
    fn limits_follow_xep_0033_and_0128() {
        // No form: the default; an advertised number is honoured up to our own cap.
        assert_eq!(multicast_limit(&info("")), Some(DEFAULT_LIMIT));
        assert_eq!(multicast_limit(&info(&limits_form("100"))), Some(100));
        assert_eq!(
            multicast_limit(&info(&limits_form("100000"))),
            Some(MAX_LIMIT)
        );
        assert_eq!(
            multicast_limit(&info(&limits_form("infinite"))),
            Some(MAX_LIMIT)
        );
        assert_eq!(multicast_limit(&info(&limits_form("1"))), None);
        // Without the feature, a form means nothing.
        let plain = parse_one(&format!(
            "<query xmlns='{NS_DISCO_INFO}'><feature var='{NS_DISCO_INFO}'/>{}</query>",
            limits_form("100")
        ));
        assert_eq!(multicast_limit(&plain), None);
    }

    fn notification(recipients: &[&str]) -> Notification {
        Notification {
            service: ServiceId::Host,
            node: "n<1>".into(),
            recipients: recipients
                .iter()
                .map(|j| Recipient {
                    jid: Jid::parse(j).unwrap(),
                    subids: vec![],
                })
                .collect(),
            event: Event::Items {
                items: vec![Item {
                    id: "i1".into(),
                    payload: "<entry xmlns='urn:x'>hi &amp; bye</entry>".into(),
                    publisher: String::new(),
                    published_ms: 0,
                }],
                payloads: true,
            },
            kind: NotificationType::Headline,
            only_available: false,
        }
    }

    #[test]
    fn multicast_message_carries_bcc_addresses_and_survives_a_bounce() {
        let n = notification(&["a@x/r1", "b@x/r'2"]);
        let body = Body::of(&n);
        let rs: Vec<&Recipient> = n.recipients.iter().collect();
        let xml = render_multicast(&body, "pubsub.x", "multicast.x", &rs);
        let wrapped = parse_one(&format!("<w xmlns='{NS_COMPONENT}'>{xml}</w>"));
        let msg = wrapped.children().next().unwrap().clone();
        assert_eq!(wrapped.children().count(), 1);
        assert_eq!(msg.get_attr("to"), Some("multicast.x"));
        assert_eq!(msg.get_attr("type"), Some("headline"));
        let addrs: Vec<(&str, &str)> = msg
            .get_child("addresses", NS_ADDRESS)
            .unwrap()
            .children()
            .map(|a| (a.get_attr("type").unwrap(), a.get_attr("jid").unwrap()))
            .collect();
        assert_eq!(addrs, vec![("bcc", "a@x/r1"), ("bcc", "b@x/r'2")]);

        // The service bounces it (XEP-0033 section 8): one message per address comes back out,
        // each with the event and the original type, without addresses or error.
        let mut bounce = msg.clone();
        bounce.set_attr("type", "error");
        bounce.set_attr("from", "multicast.x");
        bounce.push_child(
            Element::new("error", NS_COMPONENT)
                .attr("type", "cancel")
                .child(Element::new(
                    "not-acceptable",
                    "urn:ietf:params:xml:ns:xmpp-stanzas",
                )),
        );
        let bounce = parse_one(&bounce.to_xml());
        // Only the addresses the service was trusted with are resent.
        let (none, _) = resend_bounce(&bounce, "pubsub.x", |_| false).unwrap();
        assert!(none.is_empty());
        let (resent, why) = resend_bounce(&bounce, "pubsub.x", |j| j.domain() == "x").unwrap();
        assert_eq!(why, "not-acceptable");
        let wrapped = parse_one(&format!("<w xmlns='{NS_COMPONENT}'>{resent}</w>"));
        let msgs: Vec<&Element> = wrapped.children().collect();
        assert_eq!(msgs.len(), 2);
        for (m, to) in msgs.iter().zip(["a@x/r1", "b@x/r'2"]) {
            assert_eq!(m.get_attr("to"), Some(to));
            assert_eq!(m.get_attr("from"), Some("pubsub.x"));
            assert_eq!(m.get_attr("type"), Some("headline"));
            assert!(m.get_child("addresses", NS_ADDRESS).is_none());
            assert!(m.get_child("error", NS_COMPONENT).is_none());
            let item = m
                .get_child("event", super::super::notify::NS_EVENT)
                .and_then(|e| e.children().next())
                .and_then(|items| items.children().next())
                .unwrap();
            assert_eq!(item.get_attr("id"), Some("i1"));
            assert_eq!(item.children().next().unwrap().text_content(), "hi & bye");
        }
        // A message that is not one of ours is left alone.
        let other = parse_one(&format!(
            "<message xmlns='{NS_COMPONENT}' type='error' id='x'><addresses xmlns='{NS_ADDRESS}'/></message>"
        ));
        assert!(resend_bounce(&other, "pubsub.x", |_| true).is_none());
    }

    /// On connecting, discovery starts for the server's own domain (XEP-0033 section 2.1:
    /// disco#info to the domain first), without waiting for a first notification.
    #[tokio::test]
    async fn discovery_of_the_parent_domain_starts_on_connect() {
        let (out, queue) = Outbox::new(16, NS_COMPONENT);
        let mc = Arc::new(Multicast::new("pubsub.example.org", Arc::default()));
        mc.discover_parent(&out);
        let sent = tokio::time::timeout(Duration::from_secs(1), queue.lock().await.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            sent.contains("to='example.org'") && sent.contains(NS_DISCO_INFO),
            "{sent}"
        );
        // While it runs, the domain is not asked again, and a one-label domain has no parent.
        mc.discover_parent(&out);
        let single = Arc::new(Multicast::new("localhost", Arc::default()));
        single.discover_parent(&out);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(queue.lock().await.try_recv().is_err());
    }

    #[tokio::test]
    async fn no_barrier_when_the_service_is_our_own_server() {
        let (out, queue) = Outbox::new(16, NS_COMPONENT);
        let mc = Multicast::new("pubsub.example.org", Arc::default());
        let started = std::time::Instant::now();
        mc.barrier(&out, "example.org").await;
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(queue.lock().await.try_recv().is_err());
        // Another server's domain, or a service beside it, is still waited for.
        let waiting = tokio::spawn(async move { mc.barrier(&out, "multicast.example.org").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let sent = queue.lock().await.try_recv().unwrap();
        assert!(sent.contains("to='multicast.example.org'"), "{sent}");
        waiting.abort();
    }

    #[tokio::test]
    async fn an_unanswered_barrier_is_not_waited_for_again() {
        let (out, queue) = Outbox::new(16, NS_COMPONENT);
        let mc = Multicast::new("pubsub.x", Arc::default());
        let started = std::time::Instant::now();
        mc.barrier(&out, "multicast.x").await;
        assert!(started.elapsed() >= BARRIER_TIMEOUT);
        let sent = queue.lock().await.try_recv().unwrap();
        assert!(
            sent.contains("to='multicast.x'") && sent.contains("urn:xmpp:ping"),
            "{sent}"
        );
        // The next publish is answered at once, without asking the silent service again.
        let started = std::time::Instant::now();
        mc.barrier(&out, "multicast.x").await;
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(queue.lock().await.try_recv().is_err());
        // A new connection may be to a server that answers: it is asked again.
        mc.reset();
        let waiting = tokio::spawn(async move { mc.barrier(&out, "multicast.x").await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(queue.lock().await.try_recv().is_ok());
        waiting.abort();
    }
}
