//! Nodes (XEP-0060 8.1-8.5): create, configure, delete, purge.

use super::access::Action;
use super::error::{PubSubError, PubSubResult};
use super::model::*;
use super::notify::{Event, Notification};
use super::service::LastItem;
use crate::jid::Jid;

use super::policy::policy_of;
use super::service::*;

impl PubSub {
    /// Creates a node (8.1); `name` None makes an instant node (8.1.2).
    pub async fn create(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        name: Option<&str>,
        config: Option<NodeConfig>,
    ) -> PubSubResult<String> {
        let name = match name {
            Some("") => return Err(PubSubError::NodeIdRequired),
            Some(n) => n.to_owned(),
            None => token(16),
        };
        // A PEP service's nodes are created by its account only (XEP-0163 section 4).
        let policy = policy_of(svc);
        if !policy.may_create(actor) {
            return Err(PubSubError::Forbidden);
        }
        let creator = actor.to_bare().to_string();
        if policy.counts_nodes_per_user()
            && self.store.count_nodes_created_by(svc, &creator).await?
                >= self.limits().max_nodes_per_user
        {
            return Err(PubSubError::MaxNodesExceeded);
        }
        let config = match config {
            Some(c) => self.validate_config(c)?,
            None => self.default_config(svc),
        };
        let record = NodeRecord {
            name: name.clone(),
            config,
            created_ms: now_ms(),
            creator,
        };
        if !self
            .store
            .create_node(svc, &record, &actor.to_bare())
            .await?
        {
            return Err(PubSubError::NodeExists);
        }
        self.forget_names(svc);
        self.forget(svc, &name);
        Ok(name)
    }

    /// Checks ranges and the service limits of a configuration.
    pub fn validate_config(&self, mut c: NodeConfig) -> PubSubResult<NodeConfig> {
        let limits = self.limits();
        match c.max_items {
            MaxItems::Count(n) if n > limits.max_items_per_node => {
                return Err(PubSubError::BadConfig(format!(
                    "pubsub#max_items: at most {} (or max)",
                    limits.max_items_per_node
                )));
            }
            _ => {}
        }
        if c.max_payload_size == 0 || c.max_payload_size > limits.max_payload_bytes {
            c.max_payload_size = limits.max_payload_bytes;
        }
        Ok(c)
    }

    pub async fn get_config(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
    ) -> PubSubResult<NodeConfig> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::Configure)
            .await?;
        Ok(state.record.config.clone())
    }

    /// Replaces the configuration (8.2.5); notifies subscribers when notify_config is on. A
    /// subscriber the new configuration no longer lets read loses its subscription.
    pub async fn set_config(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        config: NodeConfig,
    ) -> PubSubResult<Vec<Notification>> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::Configure)
            .await?;
        let config = self.validate_config(config)?;
        self.store.save_config(svc, node, &config).await?;
        self.forget(svc, node);
        let mut out = self.revoke_unreadable(svc, node).await?;
        let state = self.node(svc, node).await?;
        if config.notify_config && config.deliver_notifications {
            let payload = config.deliver_payloads.then(|| Box::new(config.clone()));
            out.push(
                self.notification(
                    svc,
                    node,
                    &state,
                    Event::Configuration { config: payload },
                    &config,
                )
                .await,
            );
        }
        // A smaller max_items takes effect on the next publish (trim), keeping this O(1).
        Ok(out)
    }

    /// Deletes the node (8.4) and tells subscribers when notify_delete is on.
    pub async fn delete(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
        redirect: Option<String>,
    ) -> PubSubResult<Vec<Notification>> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::DeleteNode)
            .await?;
        let deleted = self.store.delete_node(svc, node).await;
        // A failed delete may have removed the node all the same (aws: half done, finished later).
        self.forget_names(svc);
        deleted?;
        self.forget(svc, node);
        self.last_items.invalidate(&Self::key(svc, node));
        let cfg = &state.record.config;
        let mut out = Vec::new();
        if cfg.notify_delete {
            out.push(
                self.notification(svc, node, &state, Event::Delete { redirect }, cfg)
                    .await,
            );
        }
        Ok(out)
    }

    /// Removes every item (8.5).
    pub async fn purge(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        node: &str,
    ) -> PubSubResult<Vec<Notification>> {
        let state = self.node(svc, node).await?;
        self.authorize_in(svc, &state, actor, Action::Purge).await?;
        if !state.record.config.persist_items {
            return Err(PubSubError::Unsupported("persistent-items"));
        }
        self.store.purge_items(svc, node).await?;
        self.last_items.insert(
            Self::key(svc, node),
            LastItem {
                item: None,
                at: None,
            },
        );
        let cfg = &state.record.config;
        let mut out = Vec::new();
        if cfg.notify_retract && cfg.deliver_notifications {
            out.push(
                self.notification(svc, node, &state, Event::Purge, cfg)
                    .await,
            );
        }
        Ok(out)
    }
}

/// One node as an administrator's list shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSummary {
    pub name: String,
    pub owners: Vec<crate::jid::BareJid>,
    pub items: u64,
    pub subscriptions: usize,
    pub pending: usize,
}

impl PubSub {
    /// The nodes after `after` (by name, at most `max` looked at) that `actor` may configure,
    /// with their owners and counts: every node for a service administrator.
    pub async fn overview(
        &self,
        svc: &ServiceId,
        actor: &Jid,
        after: Option<&str>,
        max: usize,
    ) -> PubSubResult<Vec<NodeSummary>> {
        let mut out = Vec::new();
        for name in self.node_names(svc, after, max).await? {
            let Ok(state) = self.node(svc, &name).await else {
                continue;
            };
            if self
                .authorize_in(svc, &state, actor, Action::Configure)
                .await
                .is_err()
            {
                continue;
            }
            let items = self
                .store
                .items(svc, &name, crate::storage::ItemQuery::Newest(0))
                .await?
                .count;
            let pending = state
                .subscriptions
                .iter()
                .filter(|s| s.state == SubscriptionState::Pending)
                .count();
            out.push(NodeSummary {
                owners: state.owners(),
                items,
                subscriptions: state.subscriptions.len() - pending,
                pending,
                name,
            });
        }
        Ok(out)
    }
}
