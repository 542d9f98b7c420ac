//! XEP-0049 private XML storage for the server's users, when the server delegates
//! `jabber:iq:private` to stratus (XEP-0355), kept in each account's PEP service as XEP-0223
//! describes (whitelist nodes, persistent items: only the account reads them), with XEP-0402
//! section 5.3's compatibility: the bookmarks in private storage (`storage:bookmarks`), in the
//! XEP-0048 PEP node (`storage:bookmarks`) and in XEP-0402's `urn:xmpp:bookmarks:1` (one item per
//! room) are one list, whichever a client writes.
//!
//! Every read and write goes through the core as a request of the account itself, so the
//! account's own access rules, limits and notifications apply to it as to a client's request.

use std::collections::HashMap;

use crate::jid::{BareJid, Jid};
use crate::pubsub::command::NewItem;
use crate::pubsub::model::{AccessModel, MaxItems, SendLastPublished, ServiceId};
use crate::pubsub::notify::Notification;
use crate::pubsub::{
    ConfigChange, ConfigPatch, ItemId, ItemSelection, NodeName, PubSubError, Reply, Request,
};
use crate::xml::{Element, Limits, Node, parse_element};

use super::dispatch::Inner;
use super::errors::{StanzaError, from_pubsub};
use super::pubsub::Answer;
use super::stanza::{Iq, IqType};

pub const NS_PRIVATE: &str = "jabber:iq:private";
/// XEP-0048: the bookmarks of private storage, and the name of its PEP node.
pub const NS_LEGACY_BOOKMARKS: &str = "storage:bookmarks";
/// XEP-0402.
pub const NS_BOOKMARKS: &str = "urn:xmpp:bookmarks:1";

/// What the account's disco#info gains when its server delegates private storage to stratus.
pub const PRIVATE_FEATURES: &[&str] = &[
    NS_PRIVATE,
    // XEP-0402 section 6: private XML bookmarks and XEP-0402 are unified...
    "urn:xmpp:bookmarks:1#compat",
    // ...and so are XEP-0048's PEP node and XEP-0402.
    "urn:xmpp:bookmarks:1#compat-pep",
];

/// Other namespaces live in PEP nodes of their own under this prefix, out of the way of the
/// account's real PEP nodes.
const PRIVATE_NODE_PREFIX: &str = "urn:stratus:private:";
const CURRENT: &str = "current";
/// Elements one set may carry.
const MAX_SET_ELEMENTS: usize = 16;
/// Namespaces XEP-0049 section 3 reserves.
const RESERVED: &[&str] = &[
    "jabber:client",
    "jabber:server",
    "jabber:component:accept",
    NS_PRIVATE,
];

fn node(name: &str) -> Result<NodeName, StanzaError> {
    NodeName::new(name).map_err(|e| from_pubsub(&e))
}

/// The PEP node that keeps private XML of namespace `ns`.
fn private_node(ns: &str) -> String {
    if ns == NS_LEGACY_BOOKMARKS {
        NS_LEGACY_BOOKMARKS.to_owned()
    } else {
        format!("{PRIVATE_NODE_PREFIX}{ns}")
    }
}

/// XEP-0223 section 3: the options every private node is written with (and, for a node that
/// exists, must already have: private data never goes into a node others may read).
fn private_options() -> ConfigPatch {
    ConfigPatch {
        changes: vec![
            ConfigChange::PersistItems(true),
            ConfigChange::AccessModel(AccessModel::Whitelist),
        ],
        unknown: Vec::new(),
    }
}

/// XEP-0402 section 3.2's options for a new `urn:xmpp:bookmarks:1` node.
fn bookmarks_node_options() -> ConfigPatch {
    ConfigPatch {
        changes: vec![
            ConfigChange::PersistItems(true),
            ConfigChange::MaxItems(MaxItems::Max),
            ConfigChange::SendLastPublished(SendLastPublished::Never),
            ConfigChange::AccessModel(AccessModel::Whitelist),
        ],
        unknown: Vec::new(),
    }
}

fn parse_payload(payload: &str) -> Option<Element> {
    (!payload.is_empty())
        .then(|| parse_element(payload, Limits::default()).ok())
        .flatten()
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v, Some("true" | "1"))
}

/// The room a XEP-0048 `<conference/>` names: its item id in XEP-0402.
fn room_of(c: &Element) -> Option<String> {
    Some(Jid::parse(c.get_attr("jid")?).ok()?.to_bare().to_string())
}

/// XEP-0402 section 5.3.2: a XEP-0048 `<conference/>` as a XEP-0402 item (id: the room JID),
/// keeping the `<extensions/>` of the item it replaces (found by `previous`).
fn conference_item<'a>(
    c: &Element,
    previous: impl FnOnce(&str) -> Option<&'a Element>,
) -> Option<(String, Element)> {
    let room = room_of(c)?;
    let previous = previous(&room);
    let mut out = Element::new("conference", NS_BOOKMARKS);
    if let Some(name) = c.get_attr("name") {
        out.set_attr("name", name);
    }
    if truthy(c.get_attr("autojoin")) {
        out.set_attr("autojoin", "true");
    }
    for child in ["nick", "password"] {
        if let Some(v) = c.get_child(child, NS_LEGACY_BOOKMARKS) {
            out.push_child(Element::new(child, NS_BOOKMARKS).text(v.text_content()));
        }
    }
    if let Some(ext) = previous.and_then(|p| p.get_child("extensions", NS_BOOKMARKS)) {
        out.push_child(ext.clone());
    }
    Some((room, out))
}

/// XEP-0402 section 5.3.1: the items as one XEP-0048 `<storage/>`, with what the older format has
/// and XEP-0402 dropped (`<url/>` bookmarks) kept from `previous`.
fn legacy_storage(items: &[(String, Element)], previous: Option<&Element>) -> Element {
    let mut storage = Element::new("storage", NS_LEGACY_BOOKMARKS);
    for (room, c) in items {
        let mut conf = Element::new("conference", NS_LEGACY_BOOKMARKS).attr("jid", room.clone());
        if let Some(name) = c.get_attr("name") {
            conf.set_attr("name", name);
        }
        conf.set_attr(
            "autojoin",
            if truthy(c.get_attr("autojoin")) {
                "true"
            } else {
                "false"
            },
        );
        for child in ["nick", "password"] {
            if let Some(v) = c.get_child(child, NS_BOOKMARKS) {
                conf.push_child(Element::new(child, NS_LEGACY_BOOKMARKS).text(v.text_content()));
            }
        }
        storage.push_child(conf);
    }
    for kept in previous
        .into_iter()
        .flat_map(|p| p.children())
        .filter(|c| !c.is("conference", NS_LEGACY_BOOKMARKS))
    {
        storage.push_child(kept.clone());
    }
    storage
}

/// What the compatibility has to do after a client's successful request to its PEP service.
pub enum Follow {
    /// `urn:xmpp:bookmarks:1` changed: rewrite the XEP-0048 list from it.
    Legacy,
    /// The XEP-0048 PEP node got a new list: bring `urn:xmpp:bookmarks:1` in line.
    Bookmarks(Element),
}

/// XEP-0402 section 5.3: whether a pubsub request changed one of the bookmark lists.
pub fn follow(kind: IqType, pubsub: &Element) -> Option<Follow> {
    let op = super::pubsub::op_name(kind, pubsub);
    let act = pubsub.children().find(|c| c.get_attr("node").is_some())?;
    match (op, act.get_attr("node")?) {
        ("publish" | "retract" | "purge" | "delete", NS_BOOKMARKS) => Some(Follow::Legacy),
        ("publish", NS_LEGACY_BOOKMARKS) => act
            .children()
            .find(|i| i.name() == "item")
            .and_then(|i| i.get_child("storage", NS_LEGACY_BOOKMARKS))
            .cloned()
            .map(Follow::Bookmarks),
        _ => None,
    }
}

impl Inner {
    /// A request of the account itself to its own PEP service.
    async fn as_owner(
        &self,
        owner: &BareJid,
        request: Request,
    ) -> Result<(Reply, Vec<Notification>), PubSubError> {
        let actor: Jid = owner.clone().into();
        let outcome = self
            .pubsub
            .execute(&ServiceId::Pep(owner.clone()), &actor, request)
            .await?;
        Ok((outcome.reply, outcome.notifications))
    }

    /// The items of one of the account's nodes (None: no such node), oldest first.
    async fn items_of(
        &self,
        owner: &BareJid,
        name: &str,
        selection: ItemSelection,
    ) -> Result<Option<Vec<(String, Element)>>, StanzaError> {
        let request = Request::Items {
            node: node(name)?,
            selection,
            paged: false,
        };
        match self.as_owner(owner, request).await {
            Ok((Reply::Items { page, .. }, _)) => Ok(Some(
                page.items
                    .iter()
                    .filter_map(|i| Some((i.id.clone(), parse_payload(&i.payload)?)))
                    .collect(),
            )),
            Ok(_) => Err(StanzaError::internal_server_error()),
            Err(PubSubError::NodeNotFound) => Ok(None),
            Err(PubSubError::ItemNotFound) => Ok(Some(Vec::new())),
            Err(e) => Err(from_pubsub(&e)),
        }
    }

    async fn current(&self, owner: &BareJid, name: &str) -> Result<Option<Element>, StanzaError> {
        Ok(self
            .items_of(owner, name, ItemSelection::ById(vec![CURRENT.to_owned()]))
            .await?
            .and_then(|items| items.into_iter().next().map(|(_, el)| el)))
    }

    async fn publish_as_owner(
        &self,
        owner: &BareJid,
        name: &str,
        items: Vec<(String, &Element)>,
        options: ConfigPatch,
    ) -> Result<Vec<Notification>, StanzaError> {
        let mut new = Vec::with_capacity(items.len());
        for (id, el) in items {
            new.push(NewItem {
                id: Some(ItemId::new(&id).map_err(|e| from_pubsub(&e))?),
                payload: el.to_xml(),
            });
        }
        let request = Request::Publish {
            node: node(name)?,
            items: new,
            options: Some(options),
        };
        self.as_owner(owner, request)
            .await
            .map(|(_, notes)| notes)
            .map_err(|e| from_pubsub(&e))
    }

    /// The account's XEP-0402 bookmarks (None: it has no such node), oldest first.
    async fn bookmark_items(
        &self,
        owner: &BareJid,
    ) -> Result<Option<Vec<(String, Element)>>, StanzaError> {
        self.items_of(owner, NS_BOOKMARKS, ItemSelection::Newest(None))
            .await
    }

    /// XEP-0049: a get or set of the account's own private XML.
    pub(super) async fn handle_private(
        &self,
        owner: &BareJid,
        sender: &Jid,
        iq: &Iq,
        query: &Element,
    ) -> Answer {
        // XEP-0049 section 3: only the account itself reaches its private storage.
        if sender.bare_str() != owner.as_str() {
            return Err(StanzaError::forbidden());
        }
        let elements: Vec<&Element> = query.children().collect();
        if elements.is_empty() || elements.iter().any(|e| RESERVED.contains(&e.ns())) {
            return Err(StanzaError::not_acceptable()
                .with_text("private XML needs an element of a namespace of its own"));
        }
        match iq.kind {
            IqType::Get => {
                if elements.len() != 1 {
                    return Err(StanzaError::not_acceptable()
                        .with_text("a private XML get asks for one element"));
                }
                let asked = elements[0];
                let stored = if asked.is("storage", NS_LEGACY_BOOKMARKS) {
                    self.legacy_bookmarks(owner).await?
                } else {
                    self.current(owner, &private_node(asked.ns())).await?
                };
                // Section 2.2: nothing stored yet answers with the empty element asked for.
                let found = stored.filter(|s| s.name() == asked.name() && s.ns() == asked.ns());
                let mut answer = Element::new("query", NS_PRIVATE);
                match found {
                    Some(el) => answer.push_node(Node::Raw(el.to_xml().into())),
                    None => answer.push_child(Element::new(asked.name(), asked.ns())),
                }
                Ok((Some(answer), Vec::new()))
            }
            IqType::Set => {
                if elements.len() > MAX_SET_ELEMENTS {
                    return Err(StanzaError::not_acceptable().with_text(format!(
                        "at most {MAX_SET_ELEMENTS} elements in one private XML set"
                    )));
                }
                let mut notes = Vec::new();
                for el in elements {
                    let name = private_node(el.ns());
                    notes.extend(
                        self.publish_as_owner(
                            owner,
                            &name,
                            vec![(CURRENT.to_owned(), el)],
                            private_options(),
                        )
                        .await?,
                    );
                    if el.is("storage", NS_LEGACY_BOOKMARKS) {
                        notes.extend(self.bookmarks_from_legacy(owner, el).await?);
                    }
                }
                Ok((None, notes))
            }
            IqType::Result | IqType::Error => Err(StanzaError::bad_request()),
        }
    }

    /// The XEP-0048 list: from `urn:xmpp:bookmarks:1` where the account has that node (what
    /// XEP-0402 clients write), else as last stored.
    async fn legacy_bookmarks(&self, owner: &BareJid) -> Result<Option<Element>, StanzaError> {
        let stored = self.current(owner, NS_LEGACY_BOOKMARKS).await?;
        match self.bookmark_items(owner).await? {
            Some(items) => Ok(Some(legacy_storage(&items, stored.as_ref()))),
            None => Ok(stored),
        }
    }

    /// XEP-0402 section 5.3.2: a new XEP-0048 list applied to `urn:xmpp:bookmarks:1`, item by item:
    /// rooms new or changed are published, rooms gone are retracted (with notifications).
    async fn bookmarks_from_legacy(
        &self,
        owner: &BareJid,
        storage: &Element,
    ) -> Result<Vec<Notification>, StanzaError> {
        let existing = self.bookmark_items(owner).await?;
        let node_exists = existing.is_some();
        let had: HashMap<String, Element> = existing.unwrap_or_default().into_iter().collect();
        let wanted: Vec<(String, Element)> = storage
            .children()
            .filter(|c| c.is("conference", NS_LEGACY_BOOKMARKS))
            .filter_map(|c| conference_item(c, |room| had.get(room)))
            .collect();
        let mut notes = Vec::new();
        let changed: Vec<(String, &Element)> = wanted
            .iter()
            .filter(|(room, c)| had.get(room).map(Element::to_xml) != Some(c.to_xml()))
            .map(|(room, c)| (room.clone(), c))
            .collect();
        if !changed.is_empty() {
            // A node the account made itself keeps its configuration; only its access model is
            // required (bookmarks are private).
            let options = if node_exists {
                ConfigPatch {
                    changes: vec![ConfigChange::AccessModel(AccessModel::Whitelist)],
                    unknown: Vec::new(),
                }
            } else {
                bookmarks_node_options()
            };
            notes.extend(
                self.publish_as_owner(owner, NS_BOOKMARKS, changed, options)
                    .await?,
            );
        }
        let gone: Vec<ItemId> = had
            .keys()
            .filter(|room| !wanted.iter().any(|(w, _)| w == *room))
            .filter_map(|room| ItemId::new(room).ok())
            .collect();
        if !gone.is_empty() {
            let request = Request::Retract {
                node: node(NS_BOOKMARKS)?,
                ids: gone,
                notify: Some(true),
            };
            let (_, n) = self
                .as_owner(owner, request)
                .await
                .map_err(|e| from_pubsub(&e))?;
            notes.extend(n);
        }
        Ok(notes)
    }

    /// XEP-0402 section 5.3.1: `urn:xmpp:bookmarks:1` changed; the XEP-0048 PEP node (and so
    /// private storage) gets the list it makes, when that differs from what it holds.
    async fn legacy_from_bookmarks(
        &self,
        owner: &BareJid,
    ) -> Result<Vec<Notification>, StanzaError> {
        let stored = self.current(owner, NS_LEGACY_BOOKMARKS).await?;
        let items = self.bookmark_items(owner).await?.unwrap_or_default();
        let storage = legacy_storage(&items, stored.as_ref());
        if stored.as_ref().map(Element::to_xml) == Some(storage.to_xml()) {
            return Ok(Vec::new());
        }
        self.publish_as_owner(
            owner,
            NS_LEGACY_BOOKMARKS,
            vec![(CURRENT.to_owned(), &storage)],
            private_options(),
        )
        .await
    }

    /// After a client's successful request: keeps the other bookmark lists in line.
    pub(super) async fn follow_bookmarks(
        &self,
        owner: &BareJid,
        follow: Follow,
    ) -> Vec<Notification> {
        let result = match follow {
            Follow::Legacy => self.legacy_from_bookmarks(owner).await,
            Follow::Bookmarks(storage) => self.bookmarks_from_legacy(owner, &storage).await,
        };
        result.unwrap_or_else(|e| {
            tracing::warn!("bookmarks of {owner} not brought in line: {e:?}");
            Vec::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn el(xml: &str) -> Element {
        parse_element(xml, Limits::default()).unwrap()
    }

    /// XEP-0402 section 5.3 and XEP-0048 section 3.2's example: the conversion both ways keeps
    /// the room, name, autojoin, nick and password; XEP-0402 extensions survive a XEP-0048 edit,
    /// and XEP-0048 URLs survive a XEP-0402 edit.
    #[test]
    fn bookmarks_convert_both_ways() {
        let legacy = el("<storage xmlns='storage:bookmarks'>\
             <conference name='Council of Oberon' autojoin='1' jid='council@conference.underhill.org'>\
             <nick>Puck</nick><password>titania</password></conference>\
             <url name='Complete Works' url='http://the-tech.mit.edu/Shakespeare/'/></storage>");
        let previous = el("<conference xmlns='urn:xmpp:bookmarks:1' name='old'>\
             <extensions><state xmlns='http://myclient.example/bookmark/state' minimized='true'/></extensions></conference>");
        let conf = legacy.children().next().unwrap();
        let (room, item) = conference_item(conf, |_| Some(&previous)).unwrap();
        assert_eq!(room, "council@conference.underhill.org");
        assert_eq!(item.get_attr("name"), Some("Council of Oberon"));
        assert_eq!(item.get_attr("autojoin"), Some("true"));
        assert_eq!(
            item.get_child("nick", NS_BOOKMARKS).unwrap().text_content(),
            "Puck"
        );
        assert_eq!(
            item.get_child("password", NS_BOOKMARKS)
                .unwrap()
                .text_content(),
            "titania"
        );
        assert!(item.get_child("extensions", NS_BOOKMARKS).is_some());

        let back = legacy_storage(&[(room.clone(), item)], Some(&legacy));
        let confs: Vec<&Element> = back
            .children()
            .filter(|c| c.is("conference", NS_LEGACY_BOOKMARKS))
            .collect();
        assert_eq!(confs.len(), 1);
        assert_eq!(confs[0].get_attr("jid"), Some(room.as_str()));
        assert_eq!(confs[0].get_attr("autojoin"), Some("true"));
        assert_eq!(
            confs[0]
                .get_child("nick", NS_LEGACY_BOOKMARKS)
                .unwrap()
                .text_content(),
            "Puck"
        );
        assert!(back.get_child("url", NS_LEGACY_BOOKMARKS).is_some());
    }

    #[test]
    fn a_conference_without_a_room_jid_is_skipped() {
        let c = el("<conference xmlns='storage:bookmarks' name='nowhere'/>");
        assert!(conference_item(&c, |_| None).is_none());
    }

    #[test]
    fn only_changes_to_a_bookmark_list_are_followed() {
        let publish = |node: &str| {
            el(&format!(
                "<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'>\
                 <item id='current'><storage xmlns='storage:bookmarks'/></item></publish></pubsub>"
            ))
        };
        assert!(matches!(
            follow(IqType::Set, &publish(NS_BOOKMARKS)),
            Some(Follow::Legacy)
        ));
        assert!(matches!(
            follow(IqType::Set, &publish(NS_LEGACY_BOOKMARKS)),
            Some(Follow::Bookmarks(_))
        ));
        assert!(follow(IqType::Set, &publish("urn:example:mood")).is_none());
        let items = el(
            "<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='urn:xmpp:bookmarks:1'/></pubsub>",
        );
        assert!(follow(IqType::Get, &items).is_none());
    }
}
