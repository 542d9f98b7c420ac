//! Subscriptions and affiliations (XEP-0060 6.1-6.4, 5.6-5.7, 8.7-8.9), with the limits on what
//! one account may hold.

use super::access::Action;
use super::error::{PubSubError, PubSubResult};
use super::model::*;
use super::notify::{Event, Notification, Recipient};
use crate::jid::{BareJid, Jid};
use crate::storage::{BATCH_LIMIT, SubscriptionChange};

use super::service::*;

impl PubSub {
    /// Subscribes `jid` (6.1); the actor must be that JID (bare match) unless it owns the node.
    pub async fn subscribe(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        jid: &Jid,
        options: SubOptions,
    ) -> PubSubResult<Subscribed> {
        let (state, seen) = self.node_seen(svc, node).await?;
        if jid.to_bare() != actor.to_bare()
            && self.affiliation(svc, &state, actor) != Affiliation::Owner
        {
            return Err(PubSubError::InvalidJid);
        }
        self.authorize_in(svc, &state, jid, Action::Subscribe)
            .await?;
        if let Some(existing) = state.subscriptions.iter().find(|s| s.jid == *jid) {
            if existing.state == SubscriptionState::Pending {
                return Err(PubSubError::PendingSubscription);
            }
            return Ok(Subscribed {
                subscription: existing.clone(),
                notifications: Vec::new(),
            });
        }
        self.check_subscription_limits(svc, &state, jid).await?;
        let cfg = &state.record.config;
        let needs_approval = cfg.access_model == AccessModel::Authorize
            && matches!(self.affiliation(svc, &state, jid), Affiliation::None);
        let sub = Subscription {
            jid: jid.clone(),
            subid: token(16),
            state: if needs_approval {
                SubscriptionState::Pending
            } else {
                SubscriptionState::Subscribed
            },
            options,
        };
        self.store.put_subscription(svc, node, &sub).await?;
        self.forget(svc, node);
        let mut notifications = Vec::new();
        let owners: Vec<Recipient> = state
            .owners()
            .into_iter()
            .map(|jid| Recipient {
                jid: jid.into(),
                subids: Vec::new(),
            })
            .collect();
        if needs_approval {
            notifications.push(Notification {
                service: svc.clone(),
                node: node.to_owned(),
                recipients: owners,
                event: Event::AuthorizationRequest {
                    subscriber: jid.clone(),
                    subid: sub.subid.clone(),
                },
                kind: NotificationType::Normal,
                only_available: false,
            });
        } else {
            if cfg.notify_sub && !owners.is_empty() {
                notifications.push(Notification {
                    service: svc.clone(),
                    node: node.to_owned(),
                    recipients: owners,
                    event: Event::Subscription {
                        jid: jid.clone(),
                        state: Some(SubscriptionState::Subscribed),
                        subid: Some(sub.subid.clone()),
                    },
                    kind: cfg.notification_type,
                    only_available: false,
                });
            }
            if cfg.send_last_published_item != SendLastPublished::Never
                && cfg.persist_items
                && let Some(item) = self.last_item_at(svc, node, seen).await?
            {
                notifications.push(Notification {
                    service: svc.clone(),
                    node: node.to_owned(),
                    recipients: vec![Recipient {
                        jid: jid.clone(),
                        subids: vec![sub.subid.clone()],
                    }],
                    event: Event::Items {
                        items: vec![item],
                        payloads: cfg.deliver_payloads,
                    },
                    kind: cfg.notification_type,
                    only_available: false,
                });
            }
        }
        Ok(Subscribed {
            subscription: sub,
            notifications,
        })
    }

    /// One more subscription of `jid`'s bare JID stays within the node's and the service's limits
    /// (each full JID of an account may subscribe, so an account is what is counted).
    pub(super) async fn check_subscription_limits(
        &self,
        svc: &ServiceId,
        state: &NodeState,
        jid: &Jid,
    ) -> PubSubResult<()> {
        let bare = jid.to_bare();
        let on_node = state
            .subscriptions
            .iter()
            .filter(|s| s.jid.to_bare() == bare)
            .count();
        let l = self.limits();
        if on_node >= l.max_subscriptions_per_node {
            return Err(PubSubError::LimitReached(format!(
                "{bare} has {on_node} subscriptions to this node, the most one account may hold"
            )));
        }
        let held = self.store.user_subscriptions(svc, &bare).await?.len();
        if held >= l.max_subscriptions_per_user {
            return Err(PubSubError::LimitReached(format!(
                "{bare} has {held} subscriptions on this service, the most one account may hold"
            )));
        }
        Ok(())
    }

    /// Finds the one subscription of `jid` that `subid` designates (6.2.3.1, 6.2.3.5).
    pub(super) fn pick_subscription<'a>(
        state: &'a NodeState,
        jid: &Jid,
        subid: Option<&str>,
    ) -> PubSubResult<&'a Subscription> {
        let mine: Vec<&Subscription> = state
            .subscriptions
            .iter()
            .filter(|s| s.jid == *jid)
            .collect();
        match (mine.len(), subid) {
            (0, _) => Err(PubSubError::NoSubscription),
            (_, Some(id)) => mine
                .into_iter()
                .find(|s| s.subid == id)
                .ok_or(PubSubError::InvalidSubId),
            (1, None) => Ok(mine[0]),
            (_, None) => Err(PubSubError::SubIdRequired),
        }
    }

    /// Unsubscribes (6.2).
    pub async fn unsubscribe(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        jid: &Jid,
        subid: Option<&str>,
    ) -> PubSubResult<Vec<Notification>> {
        let state = self.node(svc, node).await?;
        if jid.to_bare() != actor.to_bare()
            && self.affiliation(svc, &state, actor) != Affiliation::Owner
        {
            return Err(PubSubError::Forbidden);
        }
        let sub = Self::pick_subscription(&state, jid, subid)?.clone();
        self.store
            .delete_subscription(svc, node, jid, &sub.subid)
            .await?;
        self.forget(svc, node);
        let cfg = &state.record.config;
        let mut out = Vec::new();
        if cfg.notify_sub {
            out.push(Notification {
                service: svc.clone(),
                node: node.to_owned(),
                recipients: state
                    .owners()
                    .into_iter()
                    .map(|jid| Recipient {
                        jid: jid.into(),
                        subids: Vec::new(),
                    })
                    .collect(),
                event: Event::Subscription {
                    jid: jid.clone(),
                    state: None,
                    subid: Some(sub.subid),
                },
                kind: cfg.notification_type,
                only_available: false,
            });
        }
        Ok(out)
    }

    pub async fn get_options(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        jid: &Jid,
        subid: Option<&str>,
    ) -> PubSubResult<Subscription> {
        let state = self.node(svc, node).await?;
        if jid.to_bare() != actor.to_bare()
            && self.affiliation(svc, &state, actor) != Affiliation::Owner
        {
            return Err(PubSubError::Forbidden);
        }
        Ok(Self::pick_subscription(&state, jid, subid)?.clone())
    }

    pub async fn set_options(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        jid: &Jid,
        subid: Option<&str>,
        options: SubOptions,
    ) -> PubSubResult<()> {
        let state = self.node(svc, node).await?;
        if jid.to_bare() != actor.to_bare()
            && self.affiliation(svc, &state, actor) != Affiliation::Owner
        {
            return Err(PubSubError::Forbidden);
        }
        let mut sub = Self::pick_subscription(&state, jid, subid)?.clone();
        sub.options = options;
        self.store.put_subscription(svc, node, &sub).await?;
        self.forget(svc, node);
        Ok(())
    }

    /// The actor's subscriptions (5.6), optionally for one node.
    pub async fn user_subscriptions(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: Option<&str>,
    ) -> PubSubResult<Vec<(String, Subscription)>> {
        let mut subs = self.store.user_subscriptions(svc, &actor.to_bare()).await?;
        if let Some(n) = node {
            subs.retain(|(name, _)| name == n);
        }
        Ok(subs)
    }

    /// The actor's affiliations (5.7), optionally for one node.
    pub async fn user_affiliations(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: Option<&str>,
    ) -> PubSubResult<Vec<(String, Affiliation)>> {
        let mut affs = self.store.user_affiliations(svc, &actor.to_bare()).await?;
        if let Some(n) = node {
            affs.retain(|(name, _)| name == n);
        }
        Ok(affs)
    }

    pub async fn node_subscriptions(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
    ) -> PubSubResult<Vec<Subscription>> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::ManageSubscriptions)
            .await?;
        Ok(state.subscriptions.clone())
    }

    /// Sets subscription states (8.8.2); `None` removes. Also approves/denies pending ones (8.6).
    pub async fn set_node_subscriptions(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        changes: Vec<(Jid, Option<SubscriptionState>, Option<String>)>,
    ) -> PubSubResult<Vec<Notification>> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::ManageSubscriptions)
            .await?;
        let cfg = &state.record.config;
        let mut changes = changes;
        dedup_keep_last(&mut changes, |a, b| a.0 == b.0 && a.2 == b.2);
        let mut writes = Vec::new();
        let mut out = Vec::new();
        for (jid, new_state, subid) in changes {
            let existing: Vec<&Subscription> = state
                .subscriptions
                .iter()
                .filter(|s| s.jid == jid && subid.as_ref().is_none_or(|id| *id == s.subid))
                .collect();
            match new_state {
                None => writes.extend(existing.iter().map(|s| SubscriptionChange::Delete {
                    jid: jid.clone(),
                    subid: s.subid.clone(),
                })),
                Some(st) if existing.is_empty() => {
                    writes.push(SubscriptionChange::Put(Subscription {
                        jid: jid.clone(),
                        subid: token(16),
                        state: st,
                        options: SubOptions::default(),
                    }));
                }
                Some(st) => writes.extend(existing.iter().map(|s| {
                    let mut s = (*s).clone();
                    s.state = st;
                    SubscriptionChange::Put(s)
                })),
            }
            // The subscriber learns the new state (8.8.4).
            out.push(Notification {
                service: svc.clone(),
                node: node.to_owned(),
                recipients: vec![Recipient {
                    jid: jid.clone(),
                    subids: Vec::new(),
                }],
                event: Event::Subscription {
                    jid: jid.clone(),
                    state: new_state,
                    subid: existing.first().map(|s| s.subid.clone()),
                },
                kind: cfg.notification_type,
                only_available: false,
            });
        }
        if writes.len() > BATCH_LIMIT {
            return Err(PubSubError::LimitReached(format!(
                "at most {BATCH_LIMIT} subscription changes per request; nothing was changed"
            )));
        }
        // All or nothing: either every state of the request holds or none (8.8.2).
        self.store.change_subscriptions(svc, node, &writes).await?;
        self.forget(svc, node);
        Ok(out)
    }

    pub async fn node_affiliations(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
    ) -> PubSubResult<Vec<(BareJid, Affiliation)>> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::ManageAffiliations)
            .await?;
        let mut affs: Vec<(BareJid, Affiliation)> = state
            .affiliations
            .iter()
            .map(|(j, a)| (j.clone(), *a))
            .collect();
        affs.sort();
        Ok(affs)
    }

    /// Sets affiliations (8.9.2); who may no longer read loses its subscriptions. A node keeps at
    /// least one owner.
    pub async fn set_node_affiliations(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        changes: Vec<(BareJid, Affiliation)>,
    ) -> PubSubResult<Vec<Notification>> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::ManageAffiliations)
            .await?;
        let mut changes = changes;
        dedup_keep_last(&mut changes, |a, b| a.0 == b.0);
        if changes.len() > BATCH_LIMIT {
            return Err(PubSubError::LimitReached(format!(
                "at most {BATCH_LIMIT} affiliation changes per request; nothing was changed"
            )));
        }
        let mut owners: Vec<BareJid> = state.owners();
        for (jid, aff) in &changes {
            owners.retain(|o| o != jid);
            if *aff == Affiliation::Owner {
                owners.push(jid.clone());
            }
        }
        if owners.is_empty() {
            return Err(PubSubError::LastOwner);
        }
        // All or nothing (8.9.2).
        self.store.set_affiliations(svc, node, &changes).await?;
        self.forget(svc, node);
        // An outcast, or a member dropped from a whitelist, loses its subscriptions (8.9.2).
        // The affiliations are stored: should this fail, the request still did what it said, and
        // every delivery checks the new affiliations all the same.
        match self.revoke_unreadable(svc, node).await {
            Ok(out) => Ok(out),
            Err(e) => {
                tracing::warn!(
                    "node {node}: affiliations changed, cancelling subscriptions failed: {e}"
                );
                Ok(Vec::new())
            }
        }
    }
}

impl PubSub {
    /// XEP-0060 8.7: the approval form of each pending subscription of the node, sent again to
    /// `actor` (who must manage its subscriptions).
    pub async fn pending_approvals(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
    ) -> PubSubResult<Vec<Notification>> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::ManageSubscriptions)
            .await?;
        Ok(state
            .subscriptions
            .iter()
            .filter(|s| s.state == SubscriptionState::Pending)
            .map(|s| Notification {
                service: svc.clone(),
                node: node.to_owned(),
                recipients: vec![Recipient {
                    jid: actor.clone(),
                    subids: Vec::new(),
                }],
                event: Event::AuthorizationRequest {
                    subscriber: s.jid.clone(),
                    subid: s.subid.clone(),
                },
                kind: NotificationType::Normal,
                only_available: false,
            })
            .collect())
    }
}
