//! Rosters of local accounts, read through the XEP-0356 roster privilege and cached briefly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::debug;

use crate::component::NS_COMPONENT;
use crate::jid::Jid;
use crate::xml::Element;

use super::Pep;

pub const NS_ROSTER: &str = "jabber:iq:roster";

/// How long a fetched roster is trusted. Roster pushes are not delivered to components by every
/// server, so changes become visible within this bound.
pub const ROSTER_TTL: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RosterItem {
    pub subscription: String,
    pub groups: Vec<String>,
}

impl RosterItem {
    /// The contact receives the account's presence (subscription from or both).
    pub fn subscription_from(&self) -> bool {
        matches!(self.subscription.as_str(), "from" | "both")
    }
    /// The account receives the contact's presence (subscription to or both).
    pub fn subscription_to(&self) -> bool {
        matches!(self.subscription.as_str(), "to" | "both")
    }
}

pub type Roster = HashMap<String, RosterItem>;

/// Fetched rosters by account, bounded in entries and kept at most [`ROSTER_TTL`].
pub struct Rosters {
    cache: moka::sync::Cache<String, (Instant, Arc<Roster>)>,
}

impl Rosters {
    pub fn new(entries: u64) -> Rosters {
        Rosters {
            cache: moka::sync::Cache::builder()
                .max_capacity(entries)
                .time_to_live(ROSTER_TTL)
                .build(),
        }
    }

    pub fn forget(&self, owner: &str) {
        self.cache.invalidate(owner);
    }

    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }
}

pub fn parse_roster(result: &Element) -> Roster {
    let mut roster = Roster::new();
    if let Some(q) = result.children().find(|c| c.is("query", NS_ROSTER)) {
        for item in q.children().filter(|i| i.name() == "item") {
            let Some(jid) = item.get_attr("jid").and_then(|j| Jid::parse(j).ok()) else {
                continue;
            };
            roster.insert(
                jid.to_bare().to_string(),
                RosterItem {
                    subscription: item.get_attr("subscription").unwrap_or("none").to_owned(),
                    groups: item
                        .children()
                        .filter(|g| g.name() == "group")
                        .map(|g| g.text_content())
                        .collect(),
                },
            );
        }
    }
    roster
}

impl Pep {
    /// The account's roster (cached for [`ROSTER_TTL`]); empty without the roster privilege.
    pub async fn roster_of(&self, owner: &Jid) -> Arc<Roster> {
        self.roster_within(owner, ROSTER_TTL).await
    }

    /// The account's roster, read again when the cached copy is older than `max_age`.
    pub async fn roster_within(&self, owner: &Jid, max_age: Duration) -> Arc<Roster> {
        let key = owner.to_bare().to_string();
        if let Some((at, r)) = self.rosters.cache.get(&key)
            && at.elapsed() < max_age
        {
            return r;
        }
        let granted = self
            .privileges
            .get(owner.domain())
            .is_some_and(|g| g.roster_get);
        let roster = if granted {
            let iq = Element::new("iq", NS_COMPONENT)
                .attr("type", "get")
                .attr("from", self.component.clone())
                .attr("to", key.clone())
                .child(Element::new("query", NS_ROSTER));
            match self
                .requests
                .send(&self.outbox, iq, Duration::from_secs(5))
                .await
            {
                Some(r) if r.get_attr("type") == Some("result") => Arc::new(parse_roster(&r)),
                other => {
                    debug!("roster of {key} unavailable: {other:?}");
                    Arc::new(Roster::new())
                }
            }
        } else {
            Arc::new(Roster::new())
        };
        self.rosters
            .cache
            .insert(key, (Instant::now(), roster.clone()));
        roster
    }
}
