//! Who is online, with which XEP-0115 capabilities: learnt from the presences the XEP-0356 presence
//! privilege forwards. A caps hash seen for the first time is resolved once with disco#info and
//! cached by hash, so `+notify` filtering costs nothing per notification. An answer is cached under
//! its hash only when it hashes to it (XEP-0115 5.4), in a bounded cache; otherwise it is kept with
//! that resource alone, for its current caps, and goes with them: a flood of made-up hashes costs
//! one answer per online resource, and evicts nobody else's.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::component::NS_COMPONENT;
use crate::jid::{BareJid, FullJid, Jid};
use crate::xml::Element;

use super::Pep;

pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    pub node: String,
    pub ver: String,
    /// The hash function named (`sha-1`); None for legacy caps, which are never cached by `ver`.
    pub hash: Option<String>,
}

type Features = Arc<HashSet<String>>;

/// An online resource: its caps, and the features it answered for them when the answer did not
/// hash to the caps' ver (good for this resource and these caps only).
#[derive(Debug, Clone)]
struct Resource {
    caps: Option<Caps>,
    own: Option<Features>,
}

/// Online resources kept for one account of another server: its own server bounds its sessions,
/// but a hostile one could make up resources without end.
pub const MAX_REMOTE_RESOURCES_PER_ACCOUNT: usize = 32;

pub struct PresenceMap {
    /// bare JID -> resource -> its caps.
    online: Mutex<HashMap<String, HashMap<String, Resource>>>,
    /// Resources of other servers' accounts in `online` (changed only under its lock).
    remote: AtomicUsize,
    /// The bound of `remote`: presences of contacts on other servers beyond it are not kept.
    remote_limit: usize,
    /// A remote presence was refused since a place last freed (warned about once).
    refusing: std::sync::atomic::AtomicBool,
    /// Verified caps ver -> features.
    features: moka::sync::Cache<String, Features>,
    /// Full JIDs whose unavailable presence came in the last [`GONE_FOR`]: a delayed copy of
    /// their earlier available presence (XEP-0203; ejabberd forwards the answers to contacts'
    /// presence probes, from each contact's session, and one may arrive after the unavailable)
    /// does not bring them back. Bounded like the caps cache.
    gone: moka::sync::Cache<String, ()>,
    /// caps vers being asked about right now (one query per hash at a time), each with what
    /// tells the resources waiting on it that the query ended (its sender dropped).
    asking: Mutex<HashMap<String, tokio::sync::watch::Receiver<()>>>,
}

/// A caps query in flight: taken out of [`PresenceMap::asking`] when it ends, however it ends
/// (answered, timed out, or its task dropped), which wakes the resources waiting on it.
struct Asking<'a> {
    map: &'a Mutex<HashMap<String, tokio::sync::watch::Receiver<()>>>,
    ver: &'a str,
    _done: tokio::sync::watch::Sender<()>,
}

impl Drop for Asking<'_> {
    fn drop(&mut self) {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(self.ver);
    }
}

/// How long an unavailable resource's late, delayed presences are taken as replays.
const GONE_FOR: Duration = Duration::from_secs(60);
const NS_DELAY: &str = "urn:xmpp:delay";

/// What a presence changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceChange {
    /// A resource became available (or changed its caps).
    Available(Jid),
    Unavailable(Jid),
    Nothing,
}

impl PresenceMap {
    /// `entries`: the bound of the cache of verified caps hashes; ten times as many resources
    /// of other servers' accounts are kept.
    pub fn new(entries: u64) -> PresenceMap {
        PresenceMap {
            online: Mutex::default(),
            remote: AtomicUsize::new(0),
            remote_limit: usize::try_from(entries.saturating_mul(10)).unwrap_or(usize::MAX),
            refusing: std::sync::atomic::AtomicBool::new(false),
            features: moka::sync::Cache::new(entries),
            gone: moka::sync::Cache::builder()
                .max_capacity(entries)
                .time_to_live(GONE_FOR)
                .build(),
            asking: Mutex::default(),
        }
    }

    /// Records a presence from a local account's full JID.
    pub fn update(&self, presence: &Element) -> PresenceChange {
        self.update_from(presence, false)
    }

    /// Records a presence from a full JID; `remote`: of an account of another server (a contact
    /// of a local account, forwarded by the presence privilege), kept within bounds.
    pub fn update_from(&self, presence: &Element, remote: bool) -> PresenceChange {
        let Some(from) = presence.get_attr("from").and_then(|f| Jid::parse(f).ok()) else {
            return PresenceChange::Nothing;
        };
        let Some(resource) = from.resource() else {
            return PresenceChange::Nothing;
        };
        let bare = from.to_bare().to_string();
        let mut online = self.online.lock().unwrap_or_else(|e| e.into_inner());
        match presence.get_attr("type") {
            None => {
                let caps = presence
                    .children()
                    .find(|c| c.is("c", NS_CAPS))
                    .and_then(|c| {
                        Some(Caps {
                            node: c.get_attr("node")?.to_owned(),
                            ver: c.get_attr("ver")?.to_owned(),
                            hash: c.get_attr("hash").map(str::to_owned),
                        })
                    });
                let held = online.get(&bare);
                let new_resource = held.is_none_or(|rs| !rs.contains_key(resource));
                let delayed = presence.children().any(|c| c.is("delay", NS_DELAY));
                if new_resource && delayed && self.gone.contains_key(from.as_str()) {
                    // A replay of the session that just ended, not a new one: a new session's
                    // own presence comes undelayed.
                    return PresenceChange::Nothing;
                }
                if !delayed {
                    self.gone.invalidate(from.as_str());
                }
                if remote
                    && new_resource
                    && (held.map_or(0, HashMap::len) >= MAX_REMOTE_RESOURCES_PER_ACCOUNT
                        || self.remote.load(Ordering::Relaxed) >= self.remote_limit)
                {
                    // A hostile server can send such presences without end: warned about once
                    // until a place frees, each one at debug level.
                    if !self.refusing.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "not keeping the presence of {from}: {} resources of other servers \
                             kept already (at most {MAX_REMOTE_RESOURCES_PER_ACCOUNT} per \
                             account); further refusals are logged at debug level",
                            self.remote.load(Ordering::Relaxed)
                        );
                    } else {
                        tracing::debug!("not keeping the presence of {from}: bound reached");
                    }
                    return PresenceChange::Nothing;
                }
                let resources = online.entry(bare).or_default();
                match resources.get_mut(resource) {
                    Some(r) if r.caps == caps => PresenceChange::Nothing,
                    Some(r) => {
                        *r = Resource { caps, own: None };
                        PresenceChange::Available(from)
                    }
                    None => {
                        resources.insert(resource.to_owned(), Resource { caps, own: None });
                        if remote {
                            self.remote.fetch_add(1, Ordering::Relaxed);
                        }
                        PresenceChange::Available(from)
                    }
                }
            }
            Some("unavailable") => {
                self.gone.insert(from.to_string(), ());
                if let Some(resources) = online.get_mut(&bare) {
                    if resources.remove(resource).is_some() && remote {
                        self.remote.fetch_sub(1, Ordering::Relaxed);
                        self.refusing.store(false, Ordering::Relaxed);
                    }
                    if resources.is_empty() {
                        online.remove(&bare);
                    }
                }
                PresenceChange::Unavailable(from)
            }
            _ => PresenceChange::Nothing,
        }
    }

    /// The online full JIDs of an account, with their caps.
    pub fn resources(&self, bare: &str) -> Vec<(FullJid, Option<Caps>)> {
        let online = self.online.lock().unwrap_or_else(|e| e.into_inner());
        let (Some(resources), Ok(account)) = (online.get(bare), BareJid::parse(bare)) else {
            return Vec::new();
        };
        resources
            .iter()
            .filter_map(|(r, c)| {
                let full = account.with_resource(r).ok()?;
                Some((full, c.caps.clone()))
            })
            .collect()
    }

    /// The features of a resource with these caps, if known.
    pub fn known_features(&self, jid: &Jid, caps: &Caps) -> Option<Features> {
        if let Some(f) = self.features.get(&caps.ver) {
            return Some(f);
        }
        let online = self.online.lock().unwrap_or_else(|e| e.into_inner());
        let r = online
            .get(&jid.to_bare().to_string())?
            .get(jid.resource()?)?;
        r.own.clone().filter(|_| r.caps.as_ref() == Some(caps))
    }

    /// Records a disco#info answer of `jid` for `caps`: under the hash when it hashes to it.
    fn learn(&self, jid: &Jid, caps: &Caps, query: Option<&Element>) -> Features {
        let features: HashSet<String> = query
            .map(|q| {
                q.children()
                    .filter(|f| f.is("feature", NS_DISCO_INFO))
                    .filter_map(|f| f.get_attr("var").map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let f = Arc::new(features);
        let verified = caps.hash.as_deref() == Some("sha-1")
            && query.and_then(super::caps::sha1_ver).as_deref() == Some(caps.ver.as_str());
        if verified {
            self.features.insert(caps.ver.clone(), f.clone());
        } else {
            tracing::debug!(
                "the disco#info answer of {jid} does not hash to its caps ver {}: not cached by it",
                caps.ver
            );
            let mut online = self.online.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = online
                .get_mut(&jid.to_bare().to_string())
                .and_then(|rs| rs.get_mut(jid.resource()?))
                .filter(|r| r.caps.as_ref() == Some(caps))
            {
                r.own = Some(f.clone());
            }
        }
        f
    }

    /// Resources of other servers' accounts kept now.
    pub fn remote_resources(&self) -> usize {
        self.remote.load(Ordering::Relaxed)
    }

    /// Verified caps hashes cached (after pending evictions ran).
    pub fn cached_caps(&self) -> u64 {
        self.features.run_pending_tasks();
        self.features.entry_count()
    }
}

impl Pep {
    /// The features of a full JID, from its caps (asking it once per caps hash).
    pub async fn features_of(&self, jid: &Jid, caps: &Option<Caps>) -> Arc<HashSet<String>> {
        let Some(caps) = caps else {
            return Arc::new(HashSet::new());
        };
        if let Some(f) = self.presence.known_features(jid, caps) {
            return f;
        }
        let asked = {
            let mut asking = self
                .presence
                .asking
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match asking.get(&caps.ver) {
                Some(running) => Err(running.clone()),
                None => {
                    let (done, running) = tokio::sync::watch::channel(());
                    asking.insert(caps.ver.clone(), running);
                    Ok(Asking {
                        map: &self.presence.asking,
                        ver: &caps.ver,
                        _done: done,
                    })
                }
            }
        };
        match asked {
            Ok(_asking) => self.ask_features(jid, caps).await,
            Err(mut running) => {
                // Another resource with this hash is being asked (a login storm: everyone's
                // client has the same caps). Its answer, once verified, is this one's too; if it
                // does not verify (or never comes), this resource is asked itself.
                let _ = running.changed().await;
                match self.presence.known_features(jid, caps) {
                    Some(f) => f,
                    None => self.ask_features(jid, caps).await,
                }
            }
        }
    }

    async fn ask_features(&self, jid: &Jid, caps: &Caps) -> Arc<HashSet<String>> {
        let iq = Element::new("iq", NS_COMPONENT)
            .attr("type", "get")
            .attr("from", self.component.clone())
            .attr("to", jid.to_string())
            .child(
                Element::new("query", NS_DISCO_INFO)
                    .attr("node", format!("{}#{}", caps.node, caps.ver)),
            );
        match self
            .requests
            .send_ahead(&self.outbox, iq, Duration::from_secs(5))
            .await
        {
            Some(r) if r.get_attr("type") == Some("result") => {
                let query = r.children().find(|q| q.is("query", NS_DISCO_INFO));
                self.presence.learn(jid, caps, query)
            }
            // Unanswered: treat as no features, without caching, so a later presence retries.
            _ => Arc::new(HashSet::new()),
        }
    }

    /// Online resources of `bare` whose caps ask for notifications of `node` (`node+notify`).
    /// Never waits on a client: a caps hash not known yet is asked about in the background and
    /// counts as "no" for this notification (it is normally resolved when the resource logs in).
    pub fn notify_resources(self: &Arc<Self>, bare: &str, node: &str) -> Vec<Jid> {
        let wanted = format!("{node}+notify");
        let mut out = Vec::new();
        for (jid, caps) in self.presence.resources(bare) {
            let Some(c) = &caps else { continue };
            match self.presence.known_features(&jid, c) {
                Some(f) if f.contains(&wanted) => out.push(jid.into()),
                Some(_) => {}
                None => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        me.features_of(&jid, &caps).await;
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::{Limits, parse_element};

    fn presence(from: &str, ver: &str) -> Element {
        parse_element(
            &format!(
                "<presence xmlns='jabber:component:accept' from='{from}'>\
                 <c xmlns='{NS_CAPS}' hash='sha-1' node='https://c.example' ver='{ver}'/></presence>"
            ),
            Limits::default(),
        )
        .unwrap()
    }

    fn caps(ver: &str) -> Caps {
        Caps {
            node: "https://c.example".into(),
            ver: ver.into(),
            hash: Some("sha-1".into()),
        }
    }

    /// The disco#info answer of XEP-0115 5.2, whose ver is QgayPKawpkPSDYmwT/WM94uAlu0=.
    fn exodus() -> Element {
        parse_element(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='client' name='Exodus 0.9.1' type='pc'/>\
             <feature var='http://jabber.org/protocol/caps'/>\
             <feature var='http://jabber.org/protocol/disco#info'/>\
             <feature var='http://jabber.org/protocol/disco#items'/>\
             <feature var='http://jabber.org/protocol/muc'/></query>",
            Limits::default(),
        )
        .unwrap()
    }

    /// ejabberd forwards the answers to contacts' presence probes (XEP-0203 delayed copies of the
    /// session's presence) from each contact's session: one may come after the unavailable
    /// presence (RFC 6121 section 4.5.2). It must not bring the resource back, or the next
    /// session on that resource (same caps) would look like no change and get no last items.
    #[test]
    fn a_delayed_copy_after_unavailable_does_not_revive_the_resource() {
        let map = PresenceMap::new(100);
        let full = Jid::parse("a@h/phone").unwrap();
        let delayed = parse_element(
            &format!(
                "<presence xmlns='jabber:component:accept' from='a@h/phone'>\
                 <c xmlns='{NS_CAPS}' hash='sha-1' node='https://c.example' ver='v='/>\
                 <delay xmlns='urn:xmpp:delay' from='a@h/phone' stamp='2026-12-07T10:11:08Z'/>\
                 </presence>"
            ),
            Limits::default(),
        )
        .unwrap();
        let unavailable = parse_element(
            "<presence xmlns='jabber:component:accept' from='a@h/phone' type='unavailable'/>",
            Limits::default(),
        )
        .unwrap();
        assert_eq!(
            map.update(&presence("a@h/phone", "v=")),
            PresenceChange::Available(full.clone())
        );
        assert_eq!(map.update(&delayed), PresenceChange::Nothing);
        assert_eq!(
            map.update(&unavailable),
            PresenceChange::Unavailable(full.clone())
        );
        assert_eq!(map.update(&delayed), PresenceChange::Nothing);
        assert!(map.resources("a@h").is_empty());
        // The next session's own presence comes undelayed: a change, with its last items.
        assert_eq!(
            map.update(&presence("a@h/phone", "v=")),
            PresenceChange::Available(full)
        );
    }

    #[test]
    fn only_an_answer_that_hashes_to_its_ver_is_shared() {
        let map = PresenceMap::new(100);
        let (a, b) = (Jid::parse("a@h/1").unwrap(), Jid::parse("b@h/1").unwrap());
        let real = "QgayPKawpkPSDYmwT/WM94uAlu0=";
        map.update(&presence("a@h/1", real));
        map.update(&presence("b@h/1", real));
        map.learn(&a, &caps(real), Some(&exodus()));
        // XEP-0115 5.4: verified, so b (same ver) knows the features without asking.
        assert!(map.known_features(&b, &caps(real)).is_some());
        // A made-up ver: a's answer is a's alone, and only while a keeps those caps.
        map.update(&presence("a@h/1", "forged="));
        map.update(&presence("b@h/1", "forged="));
        map.learn(&a, &caps("forged="), Some(&exodus()));
        assert!(map.known_features(&a, &caps("forged=")).is_some());
        assert!(map.known_features(&b, &caps("forged=")).is_none());
        map.update(&presence("a@h/1", "other="));
        assert!(map.known_features(&a, &caps("forged=")).is_none());
        assert_eq!(map.cached_caps(), 1);
    }

    fn unavailable(from: &str) -> Element {
        parse_element(
            &format!(
                "<presence xmlns='jabber:component:accept' from='{from}' type='unavailable'/>"
            ),
            Limits::default(),
        )
        .unwrap()
    }

    /// Presences of other servers' accounts come from anyone's server: kept within a bound per
    /// account and in all, and a resource that goes away frees its place (RFC 6121 4.5.3).
    #[test]
    fn remote_resources_stay_within_their_bounds() {
        let map = PresenceMap::new(10); // 100 remote resources in all
        for r in 0..MAX_REMOTE_RESOURCES_PER_ACCOUNT + 10 {
            map.update_from(&presence(&format!("m@evil.example/{r}"), "v="), true);
        }
        assert_eq!(
            map.resources("m@evil.example").len(),
            MAX_REMOTE_RESOURCES_PER_ACCOUNT
        );
        for a in 0..200 {
            map.update_from(&presence(&format!("u{a}@evil.example/r"), "v="), true);
        }
        assert_eq!(map.remote_resources(), 100);
        // Local accounts are not counted against the bound, nor refused by it.
        assert_eq!(
            map.update(&presence("alice@h/1", "v=")),
            PresenceChange::Available(Jid::parse("alice@h/1").unwrap())
        );
        assert_eq!(
            map.update_from(&presence("late@far.example/r", "v="), true),
            PresenceChange::Nothing
        );
        map.update_from(&unavailable("m@evil.example/0"), true);
        assert_eq!(map.remote_resources(), 99);
        assert_eq!(
            map.update_from(&presence("late@far.example/r", "v="), true),
            PresenceChange::Available(Jid::parse("late@far.example/r").unwrap())
        );
        // A known resource changing its caps is not a new one.
        assert_eq!(
            map.update_from(&presence("late@far.example/r", "w="), true),
            PresenceChange::Available(Jid::parse("late@far.example/r").unwrap())
        );
        assert_eq!(map.remote_resources(), 100);
    }

    #[test]
    fn a_flood_of_valid_random_hashes_stays_within_the_bound() {
        let map = PresenceMap::new(50);
        let a = Jid::parse("a@h/1").unwrap();
        for i in 0..2000 {
            let q = parse_element(
                &format!(
                    "<query xmlns='http://jabber.org/protocol/disco#info'><feature var='urn:f{i}'/></query>"
                ),
                Limits::default(),
            )
            .unwrap();
            let ver = crate::pep::caps::sha1_ver(&q).unwrap();
            map.update(&presence("a@h/1", &ver));
            map.learn(&a, &caps(&ver), Some(&q));
        }
        assert!(map.cached_caps() <= 50, "{}", map.cached_caps());
    }
}
