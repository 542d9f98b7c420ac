//! Rosters of local accounts, read through the XEP-0356 roster privilege and cached briefly.

use std::collections::{HashMap, HashSet};
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
    /// Contact on another server -> the local accounts whose rosters, when read, showed it with
    /// subscription `from` or `both`. A presence forwarded for a contact does not say to which
    /// account it was addressed; this says whose last items it may be owed. A hint only: every
    /// use checks the account's roster again.
    watchers: moka::sync::Cache<String, Arc<HashSet<String>>>,
}

impl Rosters {
    /// `entries`: rosters cached; ten times as many contacts on other servers are remembered.
    pub fn new(entries: u64) -> Rosters {
        Rosters {
            cache: moka::sync::Cache::builder()
                .max_capacity(entries)
                .time_to_live(ROSTER_TTL)
                .build(),
            watchers: moka::sync::Cache::new(entries.saturating_mul(10)),
        }
    }

    /// Local accounts whose rosters, when last read, gave `contact` their presence.
    pub fn watchers_of(&self, contact: &str) -> Vec<String> {
        self.watchers
            .get(contact)
            .map(|w| w.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn watch(&self, contact: &str, account: &str, watching: bool) {
        let mut set = self
            .watchers
            .get(contact)
            .map(|w| (*w).clone())
            .unwrap_or_default();
        let changed = if watching {
            set.insert(account.to_owned())
        } else {
            set.remove(account)
        };
        if !changed {
            return;
        }
        if set.is_empty() {
            self.watchers.invalidate(contact);
        } else {
            self.watchers.insert(contact.to_owned(), Arc::new(set));
        }
    }

    /// Records what a freshly read roster of `account` says about its remote contacts, and
    /// forgets `account` for those it no longer lists with their presence subscription.
    fn learn(
        &self,
        account: &str,
        roster: &Roster,
        previous: Option<&Roster>,
        local: impl Fn(&str) -> bool,
    ) {
        for (contact, item) in roster {
            if item.subscription_from() && !local(contact) {
                self.watch(contact, account, true);
            }
        }
        for (contact, item) in previous.into_iter().flatten() {
            let still = roster
                .get(contact)
                .is_some_and(RosterItem::subscription_from);
            if item.subscription_from() && !still {
                self.watch(contact, account, false);
            }
        }
    }

    /// Forgets that `account` gives `contact` its presence (its roster says otherwise now).
    pub fn unwatch(&self, contact: &str, account: &str) {
        self.watch(contact, account, false);
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
        let cached = self.rosters.cache.get(&key);
        if let Some((at, r)) = &cached
            && at.elapsed() < max_age
        {
            return r.clone();
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
                Some(r) if r.get_attr("type") == Some("result") => {
                    let roster = Arc::new(parse_roster(&r));
                    let previous = cached.as_ref().map(|(_, r)| &**r);
                    self.rosters.learn(&key, &roster, previous, |c| {
                        Jid::parse(c).is_ok_and(|j| self.is_local(&j))
                    });
                    roster
                }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn item(subscription: &str) -> RosterItem {
        RosterItem {
            subscription: subscription.into(),
            groups: Vec::new(),
        }
    }

    /// RFC 6121 section 3: a contact with subscription `from` or `both` receives the account's
    /// presence; only contacts on other servers are indexed, and a later reading that no longer
    /// gives one the account's presence takes the account off its entry.
    #[test]
    fn remote_contacts_index_the_accounts_that_share_with_them() {
        let rosters = Rosters::new(100);
        let local = |c: &str| c.ends_with("@localhost");
        let mut first = Roster::new();
        first.insert("bob@remote.example".into(), item("both"));
        first.insert("carol@remote.example".into(), item("to"));
        first.insert("dave@localhost".into(), item("both"));
        first.insert("erin@remote.example".into(), item("from"));
        rosters.learn("alice@localhost", &first, None, local);
        assert_eq!(
            rosters.watchers_of("bob@remote.example"),
            ["alice@localhost"]
        );
        assert_eq!(
            rosters.watchers_of("erin@remote.example"),
            ["alice@localhost"]
        );
        assert!(rosters.watchers_of("carol@remote.example").is_empty());
        assert!(rosters.watchers_of("dave@localhost").is_empty());
        let mut other = Roster::new();
        other.insert("bob@remote.example".into(), item("from"));
        rosters.learn("zoe@localhost", &other, None, local);
        let mut both = rosters.watchers_of("bob@remote.example");
        both.sort();
        assert_eq!(both, ["alice@localhost", "zoe@localhost"]);
        // alice unsubscribed bob's presence from her side (now `to`) and removed erin.
        let mut second = Roster::new();
        second.insert("bob@remote.example".into(), item("to"));
        rosters.learn("alice@localhost", &second, Some(&first), local);
        assert_eq!(rosters.watchers_of("bob@remote.example"), ["zoe@localhost"]);
        assert!(rosters.watchers_of("erin@remote.example").is_empty());
        rosters.unwatch("bob@remote.example", "zoe@localhost");
        assert!(rosters.watchers_of("bob@remote.example").is_empty());
    }
}
