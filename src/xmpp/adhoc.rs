//! XEP-0050 ad-hoc commands of the host service: the administrators' commands (`[admin] jids`,
//! in the style of XEP-0133) and XEP-0060 8.7's pending-subscription command for node owners.
//!
//! Every command runs as a typed request of the core with the requester as the actor: what an
//! administrator may do is decided there (an administrator owns every node of the host service,
//! `PubSub::affiliation`), not here; this layer only hides and refuses the administrators'
//! commands to others. The commands keep no session: each stage's form carries what the next one
//! needs, so no client can make the service hold memory between stages (any `sessionid` sent
//! back is accepted). `stratus admin` runs the same commands through the HTTP listener
//! ([`Service::admin_command`]), as the service itself.

use serde_json::{Map, Value, json};

use crate::component::Outbox;
use crate::jid::Jid;
use crate::pubsub::model::{ServiceId, SubscriptionState};
use crate::pubsub::notify::Notification;
use crate::pubsub::{ItemId, NodeName, Reply, Request};
use crate::xml::Element;

use super::dispatch::{Inner, Service};
use super::errors::{StanzaError, from_pubsub};
use super::forms::{self, FORM_NODE_CONFIG, FORM_SUB_AUTH, Fields, NS_DATA, field};
use super::{NS_DISCO_INFO, NS_DISCO_ITEMS, disco};

pub const NS_COMMANDS: &str = "http://jabber.org/protocol/commands";
/// XEP-0060 8.7: the owners' command that sends again the approval forms of a node.
pub const GET_PENDING: &str = "http://jabber.org/protocol/pubsub#get-pending";
/// The prefix of the administrators' command nodes; `stratus admin` names them by the rest.
pub const ADMIN_PREFIX: &str = "urn:stratus:admin#";

/// A field a command asks for.
struct Param {
    var: &'static str,
    kind: &'static str,
    label: &'static str,
    required: bool,
}

const fn param(var: &'static str, kind: &'static str, label: &'static str) -> Param {
    Param {
        var,
        kind,
        label,
        required: true,
    }
}

const fn optional(var: &'static str, kind: &'static str, label: &'static str) -> Param {
    Param {
        var,
        kind,
        label,
        required: false,
    }
}

const NODE: Param = param("node", "text-single", "Node");

/// One command: its node (XEP-0050 2.2), name, and the fields of its first form.
pub struct Command {
    pub node: &'static str,
    pub name: &'static str,
    /// Only for the service administrators.
    pub admin: bool,
    params: &'static [Param],
}

impl Command {
    /// The name `stratus admin` and the HTTP listener know it by.
    pub fn short(&self) -> &'static str {
        self.node.strip_prefix(ADMIN_PREFIX).unwrap_or(self.node)
    }
}

pub const COMMANDS: &[Command] = &[
    Command {
        node: "urn:stratus:admin#list-nodes",
        name: "List nodes",
        admin: true,
        params: &[optional(
            "after",
            "text-single",
            "Start after this node name (the next page)",
        )],
    },
    Command {
        node: "urn:stratus:admin#node-config",
        name: "Show or change a node's configuration",
        admin: true,
        params: &[NODE],
    },
    Command {
        node: "urn:stratus:admin#delete-node",
        name: "Delete a node",
        admin: true,
        params: &[
            NODE,
            optional(
                "redirect",
                "text-single",
                "Redirect subscribers to this URI (optional)",
            ),
        ],
    },
    Command {
        node: "urn:stratus:admin#purge-node",
        name: "Purge a node's items",
        admin: true,
        params: &[NODE],
    },
    Command {
        node: "urn:stratus:admin#delete-item",
        name: "Delete an item",
        admin: true,
        params: &[
            NODE,
            param("item", "text-single", "Item id"),
            optional("notify", "boolean", "Notify the subscribers (default: yes)"),
        ],
    },
    Command {
        node: "urn:stratus:admin#list-subscriptions",
        name: "List a node's subscriptions",
        admin: true,
        params: &[NODE],
    },
    Command {
        node: "urn:stratus:admin#cancel-subscription",
        name: "Cancel a subscription",
        admin: true,
        params: &[
            NODE,
            param("jid", "jid-single", "Subscriber"),
            optional(
                "subid",
                "text-single",
                "Subscription id (default: all of the subscriber's)",
            ),
        ],
    },
    Command {
        node: GET_PENDING,
        name: "Get pending subscription requests",
        admin: false,
        params: &[param("pubsub#node", "list-single", "Node")],
    },
];

pub fn command(node: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.node == node)
}

/// A table in a result (XEP-0004 3.4 `<reported/>` and `<item/>`s).
pub struct Table {
    columns: &'static [(&'static str, &'static str)],
    rows: Vec<Vec<String>>,
}

/// Where a command stands after a request.
pub enum Step {
    /// The next stage's form (status `executing`).
    Ask(Element),
    /// Done (status `completed`): what happened, and a table when there is one.
    Done { note: String, table: Option<Table> },
}

fn done(note: impl Into<String>) -> Step {
    Step::Done {
        note: note.into(),
        table: None,
    }
}

/// XEP-0050 4.6: a malformed payload is bad-request with a commands condition.
fn bad_payload(text: String) -> StanzaError {
    StanzaError::bad_request()
        .with_app(Element::new("bad-payload", NS_COMMANDS))
        .with_text(text)
}

/// The first form of a command.
fn first_form(cmd: &Command, options: &[String]) -> Element {
    let mut x = Element::new("x", NS_DATA)
        .attr("type", "form")
        .child(Element::new("title", NS_DATA).text(cmd.name));
    if cmd.node == GET_PENDING {
        x.push_child(forms::hidden_form_type(FORM_SUB_AUTH));
    }
    for p in cmd.params {
        let mut f = field::<&str>(p.var, p.kind, p.label, &[]);
        if p.required {
            f.push_child(Element::new("required", NS_DATA));
        }
        for o in options.iter().filter(|_| p.kind == "list-single") {
            f.push_child(
                Element::new("option", NS_DATA).child(Element::new("value", NS_DATA).text(o)),
            );
        }
        x.push_child(f);
    }
    x
}

impl Inner {
    /// Runs a stage of `cmd` for `actor`; `submitted`: the fields of the form sent, if any.
    pub(super) async fn run_command(
        &self,
        actor: &Jid,
        cmd: &Command,
        submitted: Option<&Fields>,
    ) -> Result<(Step, Vec<Notification>), StanzaError> {
        if cmd.admin && !self.pubsub.is_admin(actor) {
            return Err(StanzaError::forbidden()
                .with_text("only the service administrators ([admin] jids) may run this"));
        }
        let svc = ServiceId::Host;
        let Some(fields) = submitted else {
            if cmd.node == GET_PENDING {
                let nodes = self.nodes_with_pending(&svc, actor).await?;
                if nodes.is_empty() {
                    return Ok((done("No subscription requests are pending."), Vec::new()));
                }
                return Ok((Step::Ask(first_form(cmd, &nodes)), Vec::new()));
            }
            if cmd.params.iter().any(|p| p.required) {
                return Ok((Step::Ask(first_form(cmd, &[])), Vec::new()));
            }
            return self.complete(actor, cmd, &Fields::new()).await;
        };
        if let Some(p) = cmd
            .params
            .iter()
            .find(|p| p.required && value(fields, p.var).is_none())
        {
            return Err(bad_payload(format!("the field {} is required", p.var)));
        }
        self.complete(actor, cmd, fields).await
    }

    async fn run_request(&self, actor: &Jid, request: Request) -> Result<Outcome, StanzaError> {
        self.pubsub
            .execute(&ServiceId::Host, actor, request)
            .await
            .map(|o| (o.reply, o.notifications))
            .map_err(|e| from_pubsub(&e))
    }

    /// The owned nodes of `actor` with subscriptions waiting for approval (XEP-0060 8.7.1).
    async fn nodes_with_pending(
        &self,
        svc: &ServiceId,
        actor: &Jid,
    ) -> Result<Vec<String>, StanzaError> {
        let (Reply::Affiliations { list, .. }, _) = self
            .run_request(actor, Request::Affiliations { node: None })
            .await?
        else {
            return Err(StanzaError::internal_server_error());
        };
        let mut nodes = Vec::new();
        for (name, aff) in list {
            if aff != crate::pubsub::model::Affiliation::Owner {
                continue;
            }
            if let Ok(list) = self.pubsub.node_subscriptions(svc, actor, &name).await
                && list.iter().any(|s| s.state == SubscriptionState::Pending)
            {
                nodes.push(name);
            }
        }
        Ok(nodes)
    }

    /// The last stage: the command with every field it needs.
    async fn complete(
        &self,
        actor: &Jid,
        cmd: &Command,
        fields: &Fields,
    ) -> Result<(Step, Vec<Notification>), StanzaError> {
        let node = || -> Result<NodeName, StanzaError> {
            let name = value(fields, "node")
                .or_else(|| value(fields, "pubsub#node"))
                .unwrap_or_default();
            NodeName::new(name).map_err(|e| from_pubsub(&e))
        };
        match cmd.short() {
            "list-nodes" => {
                let max = self.pubsub.limits().max_page;
                let after = value(fields, "after").map(str::to_owned);
                let (Reply::Overview(nodes), _) = self
                    .run_request(actor, Request::Overview { after, max })
                    .await?
                else {
                    return Err(StanzaError::internal_server_error());
                };
                let mut note = format!("{} nodes", nodes.len());
                if nodes.len() >= max
                    && let Some(last) = nodes.last()
                {
                    note.push_str(&format!(
                        "; more may follow: run again with after = {}",
                        last.name
                    ));
                }
                let rows = nodes
                    .into_iter()
                    .map(|n| {
                        let owners: Vec<String> = n.owners.iter().map(|o| o.to_string()).collect();
                        vec![
                            n.name,
                            owners.join(" "),
                            n.items.to_string(),
                            n.subscriptions.to_string(),
                            n.pending.to_string(),
                        ]
                    })
                    .collect();
                Ok((
                    Step::Done {
                        note,
                        table: Some(Table {
                            columns: &[
                                ("node", "Node"),
                                ("owners", "Owners"),
                                ("items", "Items"),
                                ("subscriptions", "Subscriptions"),
                                ("pending", "Pending"),
                            ],
                            rows,
                        }),
                    },
                    Vec::new(),
                ))
            }
            "node-config" => {
                let node = node()?;
                if forms::form_type(fields) != Some(FORM_NODE_CONFIG) {
                    // The second stage: the node's configuration, to change and send back.
                    let (Reply::Configuration { config, .. }, _) = self
                        .run_request(actor, Request::Configuration { node: node.clone() })
                        .await?
                    else {
                        return Err(StanzaError::internal_server_error());
                    };
                    let mut x = forms::config_form(&config, "form");
                    x.push_child(field("node", "hidden", "", &[node.as_str()]));
                    return Ok((Step::Ask(x), Vec::new()));
                }
                let mut patch =
                    forms::config_patch(fields).map_err(|e| bad_payload(e.to_string()))?;
                patch.unknown.retain(|v| v != "node");
                let (_, notes) = self
                    .run_request(
                        actor,
                        Request::Configure {
                            node: node.clone(),
                            patch: Some(patch),
                        },
                    )
                    .await?;
                Ok((
                    done(format!("The configuration of {node} is saved.")),
                    notes,
                ))
            }
            "delete-node" => {
                let node = node()?;
                let redirect = value(fields, "redirect").map(str::to_owned);
                let (_, notes) = self
                    .run_request(
                        actor,
                        Request::Delete {
                            node: node.clone(),
                            redirect,
                        },
                    )
                    .await?;
                Ok((done(format!("The node {node} is deleted.")), notes))
            }
            "purge-node" => {
                let node = node()?;
                let (_, notes) = self
                    .run_request(actor, Request::Purge { node: node.clone() })
                    .await?;
                Ok((done(format!("The items of {node} are purged.")), notes))
            }
            "delete-item" => {
                let node = node()?;
                let item = value(fields, "item").unwrap_or_default();
                let id = ItemId::new(item).map_err(|e| from_pubsub(&e))?;
                let notify = value(fields, "notify")
                    .map(|v| matches!(v, "1" | "true"))
                    .unwrap_or(true);
                let (_, notes) = self
                    .run_request(
                        actor,
                        Request::Retract {
                            node: node.clone(),
                            ids: vec![id],
                            notify: Some(notify),
                        },
                    )
                    .await?;
                Ok((
                    done(format!("The item {item} of {node} is deleted.")),
                    notes,
                ))
            }
            "list-subscriptions" => {
                let node = node()?;
                let (Reply::NodeSubscriptions { list, .. }, _) = self
                    .run_request(actor, Request::NodeSubscriptions { node: node.clone() })
                    .await?
                else {
                    return Err(StanzaError::internal_server_error());
                };
                let note = format!("{} subscriptions to {node}", list.len());
                let rows = list
                    .into_iter()
                    .map(|s| vec![s.jid.to_string(), s.subid, s.state.as_str().to_owned()])
                    .collect();
                Ok((
                    Step::Done {
                        note,
                        table: Some(Table {
                            columns: &[
                                ("jid", "Subscriber"),
                                ("subid", "Subscription id"),
                                ("subscription", "State"),
                            ],
                            rows,
                        }),
                    },
                    Vec::new(),
                ))
            }
            "cancel-subscription" => {
                let node = node()?;
                let jid = value(fields, "jid").unwrap_or_default();
                let jid = Jid::parse(jid).map_err(|e| StanzaError::jid_malformed(&e))?;
                let subid = value(fields, "subid")
                    .map(crate::pubsub::SubId::new)
                    .transpose()
                    .map_err(|e| from_pubsub(&e))?;
                let (_, notes) = self
                    .run_request(
                        actor,
                        Request::SetNodeSubscriptions {
                            node: node.clone(),
                            changes: vec![(jid.clone(), None, subid)],
                        },
                    )
                    .await?;
                Ok((
                    done(format!("The subscription of {jid} to {node} is cancelled.")),
                    notes,
                ))
            }
            _ => {
                // XEP-0060 8.7.1: the approval forms of the chosen node, sent again.
                let node = node()?;
                let (_, notes) = self
                    .run_request(actor, Request::PendingApprovals { node: node.clone() })
                    .await?;
                Ok((
                    done(format!(
                        "{} subscription requests to {node} are waiting; their approval forms \
                         are sent.",
                        notes.len()
                    )),
                    notes,
                ))
            }
        }
    }

    /// `<iq type='set'><command/></iq>` (XEP-0050 section 4).
    pub(super) async fn command(
        &self,
        actor: &Jid,
        payload: &Element,
    ) -> Result<(Option<Element>, Vec<Notification>), StanzaError> {
        let node = payload.get_attr("node").unwrap_or_default();
        // XEP-0050 4.6: an unknown command is item-not-found; an administrators' command run
        // by anyone else is forbidden (`run_command`).
        let cmd = command(node)
            .ok_or_else(|| StanzaError::item_not_found().with_text("no such command"))?;
        let sessionid = payload
            .get_attr("sessionid")
            .filter(|s| !s.is_empty() && s.len() <= 64)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{}-{}", cmd.short(), crate::pubsub::model::now_ms()));
        let reply = Element::new("command", NS_COMMANDS)
            .attr("node", cmd.node)
            .attr("sessionid", sessionid);
        let form = payload.get_child("x", NS_DATA).map(forms::parse);
        let cancelled = matches!(form.as_ref(), Some((kind, _)) if kind == "cancel");
        match payload.get_attr("action") {
            Some("cancel") => return Ok((Some(reply.attr("status", "canceled")), Vec::new())),
            None | Some("execute" | "complete" | "next") if cancelled => {
                return Ok((Some(reply.attr("status", "canceled")), Vec::new()));
            }
            None | Some("execute" | "complete" | "next") => {}
            Some(_) => {
                // "prev" (no command here has a stage to go back to) or an unknown action.
                return Err(
                    StanzaError::bad_request().with_app(Element::new("bad-action", NS_COMMANDS))
                );
            }
        }
        let submitted = form.as_ref().map(|(_, f)| f);
        let (step, notes) = self.run_command(actor, cmd, submitted).await?;
        Ok((Some(render(reply, step)), notes))
    }

    /// The commands `actor` may run, for disco#items of the commands node (XEP-0050 2.2).
    pub(super) fn command_items(&self, actor: &Jid) -> Element {
        let jid = self.domain.to_string();
        let admin = self.pubsub.is_admin(actor);
        let items = COMMANDS.iter().filter(|c| !c.admin || admin).map(|c| {
            Element::new("item", NS_DISCO_ITEMS)
                .attr("jid", jid.clone())
                .attr("node", c.node)
                .attr("name", c.name)
        });
        disco::items_query(Some(NS_COMMANDS), items.collect())
    }

    /// disco#info of the commands node or of a command (XEP-0050 2.2, 2.3); None: not a command
    /// node this requester may see.
    pub(super) fn command_info(&self, actor: &Jid, node: &str) -> Option<Element> {
        if node == NS_COMMANDS {
            return Some(disco::info_query(
                Some(node),
                &[("automation", "command-list", "Commands")],
                &[NS_DISCO_INFO, NS_DISCO_ITEMS],
                Vec::new(),
            ));
        }
        let cmd = command(node).filter(|c| !c.admin || self.pubsub.is_admin(actor))?;
        Some(disco::info_query(
            Some(node),
            &[("automation", "command-node", cmd.name)],
            &[NS_COMMANDS, NS_DATA],
            Vec::new(),
        ))
    }
}

type Outcome = (Reply, Vec<Notification>);

/// The first value of a field, when not empty.
fn value<'a>(fields: &'a Fields, var: &str) -> Option<&'a str> {
    fields
        .get(var)
        .and_then(|v| v.first())
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// A step as the `<command/>` answer (XEP-0050 4.x examples).
fn render(mut reply: Element, step: Step) -> Element {
    match step {
        Step::Ask(form) => {
            reply.set_attr("status", "executing");
            reply.push_child(
                Element::new("actions", NS_COMMANDS)
                    .attr("execute", "complete")
                    .child(Element::new("complete", NS_COMMANDS)),
            );
            reply.push_child(form);
        }
        Step::Done { note, table } => {
            reply.set_attr("status", "completed");
            reply.push_child(
                Element::new("note", NS_COMMANDS)
                    .attr("type", "info")
                    .text(note),
            );
            if let Some(t) = table {
                let mut x = Element::new("x", NS_DATA).attr("type", "result");
                let mut reported = Element::new("reported", NS_DATA);
                for (var, label) in t.columns {
                    reported.push_child(field::<&str>(var, "text-single", label, &[]));
                }
                x.push_child(reported);
                for row in t.rows {
                    let mut item = Element::new("item", NS_DATA);
                    for ((var, _), v) in t.columns.iter().zip(row) {
                        let mut f = Element::new("field", NS_DATA).attr("var", *var);
                        f.push_child(Element::new("value", NS_DATA).text(v));
                        item.push_child(f);
                    }
                    x.push_child(item);
                }
                reply.push_child(x);
            }
        }
    }
    reply
}

/// A step as JSON, for `stratus admin`: `status`, and `note` and `rows`, or the `fields` of the
/// form the next stage would send.
fn to_json(step: Step) -> Value {
    match step {
        Step::Ask(form) => {
            let (_, fields) = forms::parse(&form);
            let fields: Map<String, Value> = fields
                .into_iter()
                .filter(|(var, _)| var != "FORM_TYPE" && var != "node")
                .map(|(var, values)| (var, json!(values)))
                .collect();
            json!({ "status": "executing", "fields": fields })
        }
        Step::Done { note, table } => {
            let rows: Vec<Value> = table
                .map(|t| {
                    t.rows
                        .into_iter()
                        .map(|row| {
                            let o: Map<String, Value> = t
                                .columns
                                .iter()
                                .zip(row)
                                .map(|((var, _), v)| (var.to_string(), Value::String(v)))
                                .collect();
                            Value::Object(o)
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({ "status": "completed", "note": note, "rows": rows })
        }
    }
}

impl Service {
    /// An administrators' command from `stratus admin` (through the HTTP listener), run as the
    /// service itself (an administrator), with `fields` as its submitted form; notifications go
    /// out on the component stream.
    pub async fn admin_command(
        &self,
        name: &str,
        fields: Fields,
        out: &Outbox,
    ) -> Result<Value, StanzaError> {
        let inner = &self.inner;
        let cmd = COMMANDS
            .iter()
            .find(|c| c.admin && c.short() == name)
            .ok_or_else(|| StanzaError::item_not_found().with_text(format!("no command {name}")))?;
        let mut fields = fields;
        if cmd.short() == "node-config" && fields.keys().any(|v| v.starts_with("pubsub#")) {
            // Options given: the change, as the configuration form would submit it.
            fields.insert("FORM_TYPE".into(), vec![FORM_NODE_CONFIG.into()]);
        }
        let actor = inner.domain.clone();
        let (step, notes) = inner.run_command(&actor, cmd, Some(&fields)).await?;
        inner.send_notifications(&notes, out).await;
        Ok(to_json(step))
    }

    /// The JID `stratus admin` acts as: the service's own domain, which only this process can
    /// send from (the server routes that domain to the component).
    pub fn admin_actor(&self) -> crate::jid::BareJid {
        self.inner.domain.to_bare()
    }
}
