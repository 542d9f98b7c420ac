//! Who is online, with which XEP-0115 capabilities: learnt from the presences the XEP-0356 presence
//! privilege forwards. A caps hash seen for the first time is resolved once with disco#info and
//! cached by hash, so `+notify` filtering costs nothing per notification.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::component::NS_COMPONENT;
use crate::jid::Jid;
use crate::xml::Element;

use super::Pep;

pub const NS_CAPS: &str = "http://jabber.org/protocol/caps";
const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caps {
    pub node: String,
    pub ver: String,
}

#[derive(Default)]
pub struct PresenceMap {
    /// bare JID -> resource -> caps of that resource.
    online: Mutex<HashMap<String, HashMap<String, Option<Caps>>>>,
    /// caps ver -> features.
    features: Mutex<HashMap<String, Arc<HashSet<String>>>>,
    /// caps vers being asked about right now (one query per hash at a time).
    asking: Mutex<HashSet<String>>,
}

/// What a presence changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PresenceChange {
    /// A resource became available (or changed its caps).
    Available(Jid),
    Unavailable(Jid),
    Nothing,
}

impl PresenceMap {
    /// Records a presence from a local account's full JID.
    pub fn update(&self, presence: &Element) -> PresenceChange {
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
                        })
                    });
                let resources = online.entry(bare).or_default();
                let previous = resources.insert(resource.to_owned(), caps.clone());
                if previous == Some(caps) {
                    PresenceChange::Nothing
                } else {
                    PresenceChange::Available(from)
                }
            }
            Some("unavailable") => {
                if let Some(resources) = online.get_mut(&bare) {
                    resources.remove(resource);
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
    pub fn resources(&self, bare: &str) -> Vec<(Jid, Option<Caps>)> {
        let online = self.online.lock().unwrap_or_else(|e| e.into_inner());
        let Some(resources) = online.get(bare) else {
            return Vec::new();
        };
        resources
            .iter()
            .filter_map(|(r, c)| {
                Jid::parse(bare)
                    .ok()
                    .map(|j| (j.with_resource(r), c.clone()))
            })
            .collect()
    }

    pub fn known_features(&self, ver: &str) -> Option<Arc<HashSet<String>>> {
        self.features
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(ver)
            .cloned()
    }

    fn learn(&self, ver: &str, features: HashSet<String>) -> Arc<HashSet<String>> {
        let f = Arc::new(features);
        self.features
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(ver.to_owned(), f.clone());
        f
    }
}

impl Pep {
    /// The features of a full JID, from its caps (asking it once per caps hash).
    pub async fn features_of(&self, jid: &Jid, caps: &Option<Caps>) -> Arc<HashSet<String>> {
        let Some(caps) = caps else {
            return Arc::new(HashSet::new());
        };
        if let Some(f) = self.presence.known_features(&caps.ver) {
            return f;
        }
        if !self
            .presence
            .asking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(caps.ver.clone())
        {
            // Another task asks about this hash right now.
            return Arc::new(HashSet::new());
        }
        let features = self.ask_features(jid, caps).await;
        self.presence
            .asking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&caps.ver);
        features
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
            .send(&self.outbox, iq, Duration::from_secs(5))
            .await
        {
            Some(r) if r.get_attr("type") == Some("result") => {
                let features: HashSet<String> = r
                    .children()
                    .find(|q| q.is("query", NS_DISCO_INFO))
                    .map(|q| {
                        q.children()
                            .filter(|f| f.name() == "feature")
                            .filter_map(|f| f.get_attr("var").map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                self.presence.learn(&caps.ver, features)
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
            match self.presence.known_features(&c.ver) {
                Some(f) if f.contains(&wanted) => out.push(jid),
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
