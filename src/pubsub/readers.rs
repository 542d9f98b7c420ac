//! Who may see what: the one authorization every read and every delivery passes (XEP-0060
//! 4.1 table 4, then the access model of 4.5), whose roster counts, discovery that follows it,
//! and the subscriptions a change of access ends.

use super::access::{Action, RosterRelation, capability, check};
use super::error::PubSubResult;
use super::model::*;
use super::notify::{Event, Notification, Recipient};
use std::collections::{HashMap, HashSet};

use crate::jid::{BareJid, Jid};
use crate::storage::{BATCH_LIMIT, SubscriptionChange};

use super::policy::policy_of;
use super::service::*;

impl PubSub {
    /// The candidates that may read the node now. Every delivery (explicit subscriber or implicit
    /// `+notify` contact, of every kind of notification) passes this same check as a read
    /// (XEP-0060 4.1 table 4, then the access model), with the owner's roster read once for all.
    pub async fn readers(
        &self,
        svc: &ServiceId,
        state: &NodeState,
        candidates: Vec<Recipient>,
    ) -> Vec<Recipient> {
        let cfg = &state.record.config;
        // On the publish path: constant work per recipient, whatever the number of subscribers.
        let needs_roster = matches!(
            cfg.access_model,
            AccessModel::Presence | AccessModel::Roster
        );
        let mut undecided: Vec<BareJid> = if needs_roster {
            candidates
                .iter()
                .filter(|r| self.affiliation(svc, state, &r.jid) == Affiliation::None)
                .map(|r| r.jid.to_bare())
                .collect()
        } else {
            Vec::new()
        };
        undecided.sort();
        undecided.dedup();
        let relations: HashMap<BareJid, RosterRelation> = if undecided.is_empty() {
            HashMap::new()
        } else {
            let found = self
                .roster
                .relations(svc, &policy_of(svc).roster_owners(state), &undecided)
                .await;
            undecided.into_iter().zip(found).collect()
        };
        // Only the authorize model asks whether a candidate holds an approved subscription.
        let approved: HashSet<&str> = if cfg.access_model == AccessModel::Authorize {
            state
                .subscriptions
                .iter()
                .filter(|s| s.state == SubscriptionState::Subscribed)
                .map(|s| s.jid.as_str())
                .collect()
        } else {
            HashSet::new()
        };
        let none = RosterRelation::default();
        let lookups = !relations.is_empty() || !approved.is_empty();
        candidates
            .into_iter()
            .filter(|r| {
                let (rel, subscribed) = if lookups {
                    let bare = r.jid.bare_str();
                    let subscribed = approved.contains(r.jid.as_str()) || approved.contains(bare);
                    (relations.get(bare).unwrap_or(&none), subscribed)
                } else {
                    (&none, false)
                };
                check(
                    self.affiliation(svc, state, &r.jid),
                    Action::RetrieveItems,
                    cfg,
                    rel,
                    subscribed,
                )
                .is_ok()
            })
            .collect()
    }

    /// Checks `action` for `actor` on a node of `svc` (whose roster the access models consult).
    pub async fn authorize_in(
        &self,
        svc: &ServiceId,
        state: &NodeState,
        actor: &Jid,
        action: Action,
    ) -> PubSubResult<()> {
        self.authorize_since(svc, state, actor, action, std::time::Instant::now())
            .await
    }

    /// [`PubSub::authorize_in`] for a decision that began at `since`, with the owner's roster as
    /// read since then ([`RosterSource::relation_since`]): the decisions of one moment share a
    /// roster read.
    pub async fn authorize_since(
        &self,
        svc: &ServiceId,
        state: &NodeState,
        actor: &Jid,
        action: Action,
        since: std::time::Instant,
    ) -> PubSubResult<()> {
        let aff = self.affiliation(svc, state, actor);
        let cfg = &state.record.config;
        // Only fetch the roster when the decision depends on it.
        let needs_roster = aff == Affiliation::None
            && matches!(action, Action::Subscribe | Action::RetrieveItems)
            && matches!(
                cfg.access_model,
                AccessModel::Presence | AccessModel::Roster
            );
        let roster = if needs_roster {
            self.roster
                .relation_since(
                    svc,
                    &policy_of(svc).roster_owners(state),
                    &actor.to_bare(),
                    since,
                )
                .await
        } else {
            RosterRelation::default()
        };
        check(aff, action, cfg, &roster, state.is_subscribed(actor))
    }

    /// The names of the nodes `actor` may read (XEP-0060 5.2 discovery follows each node's access
    /// model: a whitelist node is not shown to whom it would refuse).
    pub async fn readable_node_names(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        after: Option<&str>,
        max: usize,
    ) -> PubSubResult<Vec<String>> {
        let mut out = Vec::new();
        for name in self.node_names(svc, after, max).await? {
            let Ok(state) = self.node(svc, &name).await else {
                continue;
            };
            if self
                .authorize_in(svc, &state, actor, Action::RetrieveItems)
                .await
                .is_ok()
            {
                out.push(name);
            }
        }
        Ok(out)
    }

    /// After a change of access model or affiliations: cancels the subscriptions of entities the
    /// node no longer lets read, and tells each of them (XEP-0060 8.8.4, subscription `none`).
    /// Under the presence and roster models a subscription stays while the owner's roster cannot
    /// be read with certainty; deliveries are checked one by one all the same ([`Self::readers`]).
    pub(super) async fn revoke_unreadable(
        &self,
        svc: &ServiceId,
        node: &str,
    ) -> PubSubResult<Vec<Notification>> {
        let state = self.node(svc, node).await?;
        let cfg = &state.record.config;
        let roster_model = matches!(
            cfg.access_model,
            AccessModel::Presence | AccessModel::Roster
        );
        let mut out = Vec::new();
        let mut cancelled = Vec::new();
        for sub in &state.subscriptions {
            let aff = self.affiliation(svc, &state, &sub.jid);
            let allowed = match capability(aff, Action::RetrieveItems) {
                // The affiliation decides alone (an outcast never reads).
                Some(decided) => decided,
                None if roster_model => true,
                None => {
                    // A pending subscription waits for the owner (authorize); it is not a right.
                    let subscribed = sub.state == SubscriptionState::Subscribed;
                    let pending = sub.state == SubscriptionState::Pending
                        && cfg.access_model == AccessModel::Authorize;
                    pending
                        || check(
                            aff,
                            Action::RetrieveItems,
                            cfg,
                            &RosterRelation::default(),
                            subscribed,
                        )
                        .is_ok()
                }
            };
            if allowed {
                continue;
            }
            cancelled.push(SubscriptionChange::Delete {
                jid: sub.jid.clone(),
                subid: sub.subid.clone(),
            });
            out.push(Notification {
                service: svc.clone(),
                node: node.to_owned(),
                recipients: vec![Recipient {
                    jid: sub.jid.clone(),
                    subids: Vec::new(),
                }],
                event: Event::Subscription {
                    jid: sub.jid.clone(),
                    state: None,
                    subid: Some(sub.subid.clone()),
                },
                kind: cfg.notification_type,
                only_available: false,
            });
        }
        // In store batches; the subscribers of a batch are told once it is stored. A batch that
        // fails leaves its subscriptions in place (each delivery is checked all the same) and
        // the next change of the node tries again.
        let mut stored = 0;
        for chunk in cancelled.chunks(BATCH_LIMIT) {
            if let Err(e) = self.store.change_subscriptions(svc, node, chunk).await {
                tracing::warn!(
                    "node {node}: cancelling {} subscriptions failed: {e}",
                    chunk.len()
                );
                break;
            }
            stored += chunk.len();
        }
        out.truncate(stored);
        if !out.is_empty() {
            self.forget(svc, node);
        }
        Ok(out)
    }

    /// A notification to the node's subscribers, and the service policy's implicit recipients,
    /// who may read it now (`state` as of the change).
    pub(super) async fn notification(
        &self,
        svc: &ServiceId,
        node: &str,
        state: &NodeState,
        event: Event,
        cfg: &NodeConfig,
    ) -> Notification {
        let mut candidates = state.recipients();
        let policy = policy_of(svc);
        if event.carries_node_data() && policy.has_implicit_recipients() {
            // XEP-0163 section 4: contacts asking `+notify`, unless already a subscriber; they
            // pass the same read check as subscribers below.
            let implicit = policy.implicit_candidates(&*self.roster, node).await;
            let mut seen: HashSet<Jid> = candidates.iter().map(|r| r.jid.clone()).collect();
            candidates.extend(
                implicit
                    .into_iter()
                    .filter(|j| seen.insert(j.clone()))
                    .map(|jid| Recipient {
                        jid,
                        subids: Vec::new(),
                    }),
            );
        }
        Notification {
            service: svc.clone(),
            node: node.to_owned(),
            recipients: self.readers(svc, state, candidates).await,
            event,
            kind: cfg.notification_type,
            only_available: cfg.presence_based_delivery,
        }
    }
}
