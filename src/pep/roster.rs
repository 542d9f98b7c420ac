//! Rosters of local accounts, read through the XEP-0356 roster privilege and cached briefly.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::component::NS_COMPONENT;
use crate::jid::Jid;
use crate::xml::Element;

use super::Pep;

pub const NS_ROSTER: &str = "jabber:iq:roster";

/// How long a fetched roster is trusted. Roster pushes are not delivered to components by every
/// server, so changes become visible within this bound.
pub const ROSTER_TTL: Duration = Duration::from_secs(30);

/// How long a roster read waits for the server's answer.
const ROSTER_WAIT: Duration = Duration::from_secs(30);

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
    /// One read of an account's roster at a time: a decision that needs a fresh roster waits for
    /// the read in progress, then takes the answer of any read sent after it began (see
    /// [`Pep::roster_since`]). Bounded like the cache; an evicted lock only allows a second read.
    reading: moka::sync::Cache<String, Arc<tokio::sync::Mutex<()>>>,
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
            reading: moka::sync::Cache::new(entries),
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
        self.roster_where(owner, |read_at| read_at.elapsed() < max_age)
            .await
    }

    /// The account's roster as the server answered a read sent at or after `since`: what an
    /// access decision that began at `since` must go by (a contact added or removed before it
    /// counts). Reads of one account are made one at a time, and every decision waiting when
    /// one is sent takes its answer: in a login storm, where each account's roster is wanted
    /// by each of its contacts at once, the server answers one read per account and round trip
    /// instead of one per decision.
    pub async fn roster_since(&self, owner: &Jid, since: Instant) -> Arc<Roster> {
        self.roster_where(owner, |read_at| read_at >= since).await
    }

    /// The cached roster when `fresh` takes the time its read was sent, else a new read: one
    /// at a time per account, and the cache looked at again once it is this one's turn.
    async fn roster_where(&self, owner: &Jid, fresh: impl Fn(Instant) -> bool) -> Arc<Roster> {
        let key = owner.to_bare().to_string();
        let cached = |rosters: &Rosters| {
            rosters
                .cache
                .get(&key)
                .filter(|(at, _)| fresh(*at))
                .map(|(_, r)| r)
        };
        if let Some(r) = cached(&self.rosters) {
            return r;
        }
        let turn = self.rosters.reading.get_with(key.clone(), Arc::default);
        let _turn = turn.lock().await;
        if let Some(r) = cached(&self.rosters) {
            return r;
        }
        let previous = self.rosters.cache.get(&key).map(|(_, r)| r);
        let sent = Instant::now();
        match self.read_roster(&key, owner, previous.as_deref()).await {
            Some(roster) => {
                self.rosters.cache.insert(key, (sent, roster.clone()));
                roster
            }
            // Not cached: the next decision asks again instead of refusing for ROSTER_TTL.
            None => Arc::new(Roster::new()),
        }
    }

    /// Asks the server for the account's roster: empty without the roster privilege; None when
    /// the server did not answer in time (nothing is let in on a roster not seen). The wait is
    /// long because the question queues behind everything else on the one stream: in a login
    /// storm, behind thousands of last items on their way out.
    async fn read_roster(
        &self,
        key: &str,
        owner: &Jid,
        previous: Option<&Roster>,
    ) -> Option<Arc<Roster>> {
        let granted = self
            .privileges
            .get(owner.domain())
            .is_some_and(|g| g.roster_get);
        if !granted {
            return Some(Arc::new(Roster::new()));
        }
        let iq = Element::new("iq", NS_COMPONENT)
            .attr("type", "get")
            .attr("from", self.component.clone())
            .attr("to", key)
            .child(Element::new("query", NS_ROSTER));
        match self
            .requests
            .send_ahead(&self.outbox, iq, ROSTER_WAIT)
            .await
        {
            Some(r) if r.get_attr("type") == Some("result") => {
                let roster = Arc::new(parse_roster(&r));
                self.rosters.learn(key, &roster, previous, |c| {
                    Jid::parse(c).is_ok_and(|j| self.is_local(&j))
                });
                Some(roster)
            }
            Some(r) => {
                // An error answer (no such account, say) is the server's word: an empty roster.
                debug!("roster of {key} refused: {r}");
                Some(Arc::new(Roster::new()))
            }
            None => {
                warn!("no answer to the roster of {key} within {ROSTER_WAIT:?}");
                None
            }
        }
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

    /// Decisions waiting on one account's roster share reads, and none takes the answer of a
    /// read sent before it began: twenty decisions at once make two reads, the first one's and
    /// one for all nineteen that began while it was in flight, which see the roster as it is
    /// after the change made meanwhile (a contact added, RFC 6121 section 2.1.2.5).
    #[tokio::test]
    async fn waiting_decisions_share_reads_sent_after_they_began() {
        use crate::component::{Outbox, Requests};
        use crate::xml::{Limits, parse_element};

        let (outbox, rx) = Outbox::new(64, NS_COMPONENT);
        let requests = Arc::new(Requests::default());
        let pep = Arc::new(Pep::new(
            "pubsub.localhost",
            vec!["localhost".into()],
            outbox,
            requests.clone(),
            100,
        ));
        pep.privileges.record(
            "localhost",
            &parse_element(
                "<privilege xmlns='urn:xmpp:privilege:2'>\
                 <perm access='roster' type='get'/></privilege>",
                Limits::default(),
            )
            .unwrap(),
        );
        let owner = Jid::parse("alice@localhost").unwrap();
        let first = {
            let (pep, owner) = (pep.clone(), owner.clone());
            tokio::spawn(async move { pep.roster_since(&owner, Instant::now()).await })
        };
        let mut queue = rx.lock_urgent().await;
        let asked = |xml: String| {
            let iq = parse_element(&xml, Limits::default()).unwrap();
            assert_eq!(iq.get_attr("to"), Some("alice@localhost"), "{xml}");
            iq.get_attr("id").unwrap().to_owned()
        };
        let id1 = asked(queue.recv().await.unwrap());
        // Nineteen decisions begin while the first read is in flight.
        let later: Vec<_> = (0..19)
            .map(|_| {
                let (pep, owner) = (pep.clone(), owner.clone());
                let since = Instant::now();
                tokio::spawn(async move { pep.roster_since(&owner, since).await })
            })
            .collect();
        tokio::task::yield_now().await;
        let answer = |id: &str, contact: &str| {
            parse_element(
                &format!(
                    "<iq xmlns='jabber:component:accept' type='result' id='{id}' \
                     from='alice@localhost' to='pubsub.localhost'>\
                     <query xmlns='jabber:iq:roster'>\
                     <item jid='{contact}' subscription='both'/></query></iq>"
                ),
                Limits::default(),
            )
            .unwrap()
        };
        requests.complete(answer(&id1, "bob@localhost")).unwrap();
        assert!(first.await.unwrap().contains_key("bob@localhost"));
        let id2 = asked(queue.recv().await.unwrap());
        requests.complete(answer(&id2, "carol@localhost")).unwrap();
        for task in later {
            let roster = task.await.unwrap();
            assert!(
                roster.contains_key("carol@localhost") && !roster.contains_key("bob@localhost"),
                "a decision took a roster read before it began: {roster:?}"
            );
        }
        assert!(queue.try_recv().is_err(), "more than two reads were sent");
    }
}
