//! XEP-0004 data forms for pubsub: node configuration (XEP-0060 16.4.3), subscription options
//! (16.4.2), node meta-data (16.4.4), publish-options preconditions (7.1.5) and approval (8.6).

use std::collections::BTreeMap;

use crate::pubsub::model::*;
use crate::pubsub::{ConfigChange, ConfigPatch, PubSubError};
use crate::xml::Element;

pub const NS_DATA: &str = "jabber:x:data";
pub const FORM_NODE_CONFIG: &str = "http://jabber.org/protocol/pubsub#node_config";
pub const FORM_SUB_OPTIONS: &str = "http://jabber.org/protocol/pubsub#subscribe_options";
pub const FORM_META_DATA: &str = "http://jabber.org/protocol/pubsub#meta-data";
pub const FORM_PUBLISH_OPTIONS: &str = "http://jabber.org/protocol/pubsub#publish-options";
pub const FORM_SUB_AUTH: &str = "http://jabber.org/protocol/pubsub#subscribe_authorization";

/// The submitted values of a form, by field var.
pub type Fields = BTreeMap<String, Vec<String>>;

/// Reads `<x xmlns='jabber:x:data'>`: its type and field values.
pub fn parse(x: &Element) -> (String, Fields) {
    let kind = x.get_attr("type").unwrap_or("form").to_owned();
    let mut fields = Fields::new();
    for f in x.children().filter(|c| c.is("field", NS_DATA)) {
        if let Some(var) = f.get_attr("var") {
            let values = f
                .children()
                .filter(|v| v.is("value", NS_DATA))
                .map(|v| v.text_content())
                .collect();
            fields.insert(var.to_owned(), values);
        }
    }
    (kind, fields)
}

pub fn form_type(fields: &Fields) -> Option<&str> {
    fields
        .get("FORM_TYPE")
        .and_then(|v| v.first())
        .map(String::as_str)
}

pub(super) fn field<S: AsRef<str>>(var: &str, kind: &str, label: &str, values: &[S]) -> Element {
    let mut f = Element::new("field", NS_DATA)
        .attr("var", var)
        .attr("type", kind);
    if !label.is_empty() {
        f.set_attr("label", label);
    }
    for v in values {
        f.push_child(Element::new("value", NS_DATA).text(v.as_ref()));
    }
    f
}

pub(super) fn list(var: &str, label: &str, value: &str, options: &[&str]) -> Element {
    let mut f = field(var, "list-single", label, &[value.to_owned()]);
    for o in options {
        f.push_child(
            Element::new("option", NS_DATA).child(Element::new("value", NS_DATA).text(*o)),
        );
    }
    f
}

pub(super) fn hidden_form_type(ft: &str) -> Element {
    field("FORM_TYPE", "hidden", "", &[ft.to_owned()])
}

fn b(v: bool) -> String {
    if v { "1".into() } else { "0".into() }
}

fn max_items_str(m: MaxItems) -> String {
    match m {
        MaxItems::Count(n) => n.to_string(),
        MaxItems::Max => "max".into(),
    }
}

/// The node configuration as a form (`type` form for configure get, result for notifications).
pub fn config_form(c: &NodeConfig, kind: &str) -> Element {
    let mut x = Element::new("x", NS_DATA)
        .attr("type", kind)
        .child(hidden_form_type(FORM_NODE_CONFIG));
    let bool_field = |var: &str, label: &str, v: bool| field(var, "boolean", label, &[b(v)]);
    x.push_child(field(
        "pubsub#title",
        "text-single",
        "A friendly name for the node",
        &[&c.title],
    ));
    x.push_child(field(
        "pubsub#description",
        "text-single",
        "A description of the node",
        &[&c.description],
    ));
    x.push_child(field(
        "pubsub#type",
        "text-single",
        "The type of node data, usually a namespace",
        &[&c.payload_type],
    ));
    x.push_child(field(
        "pubsub#max_items",
        "text-single",
        "Max # of items to persist (or max)",
        &[max_items_str(c.max_items)],
    ));
    x.push_child(field(
        "pubsub#item_expire",
        "text-single",
        "Number of seconds after which to automatically purge items (0: never)",
        &[c.item_expire.unwrap_or(0).to_string()],
    ));
    x.push_child(bool_field(
        "pubsub#persist_items",
        "Persist items to storage",
        c.persist_items,
    ));
    x.push_child(bool_field(
        "pubsub#deliver_payloads",
        "Deliver payloads with event notifications",
        c.deliver_payloads,
    ));
    x.push_child(bool_field(
        "pubsub#deliver_notifications",
        "Deliver event notifications",
        c.deliver_notifications,
    ));
    x.push_child(bool_field(
        "pubsub#notify_config",
        "Notify subscribers when the node configuration changes",
        c.notify_config,
    ));
    x.push_child(bool_field(
        "pubsub#notify_delete",
        "Notify subscribers when the node is deleted",
        c.notify_delete,
    ));
    x.push_child(bool_field(
        "pubsub#notify_retract",
        "Notify subscribers when items are removed from the node",
        c.notify_retract,
    ));
    x.push_child(bool_field(
        "pubsub#notify_sub",
        "Notify owners about new subscribers and unsubscribes",
        c.notify_sub,
    ));
    x.push_child(list(
        "pubsub#notification_type",
        "Message type of event notifications",
        match c.notification_type {
            NotificationType::Normal => "normal",
            NotificationType::Headline => "headline",
        },
        &["normal", "headline"],
    ));
    x.push_child(list(
        "pubsub#send_last_published_item",
        "When to send the last published item",
        c.send_last_published_item.as_str(),
        &["never", "on_sub", "on_sub_and_presence"],
    ));
    x.push_child(bool_field(
        "pubsub#presence_based_delivery",
        "Deliver notifications only to available users",
        c.presence_based_delivery,
    ));
    x.push_child(list(
        "pubsub#access_model",
        "Who may subscribe and retrieve items",
        c.access_model.as_str(),
        &["open", "presence", "roster", "authorize", "whitelist"],
    ));
    x.push_child(list(
        "pubsub#publish_model",
        "Who may publish",
        c.publish_model.as_str(),
        &["publishers", "subscribers", "open"],
    ));
    x.push_child(field(
        "pubsub#roster_groups_allowed",
        "list-multi",
        "Roster groups allowed to subscribe",
        &c.roster_groups_allowed,
    ));
    x.push_child(field(
        "pubsub#max_payload_size",
        "text-single",
        "Max payload size in bytes",
        &[c.max_payload_size.to_string()],
    ));
    x
}

fn parse_bool(var: &str, v: &str) -> Result<bool, PubSubError> {
    match v {
        "1" | "true" => Ok(true),
        "0" | "false" => Ok(false),
        _ => Err(PubSubError::BadConfig(format!(
            "{var}: expected a boolean, got {v:?}"
        ))),
    }
}

fn parse_u64(var: &str, v: &str) -> Result<u64, PubSubError> {
    v.trim()
        .parse()
        .map_err(|_| PubSubError::BadConfig(format!("{var}: expected a number, got {v:?}")))
}

/// One submitted `pubsub#node_config` field as a typed change; None for a field this service
/// does not know (and for FORM_TYPE).
pub fn config_change(var: &str, values: &[String]) -> Result<Option<ConfigChange>, PubSubError> {
    let one = values.first().map(String::as_str).unwrap_or("");
    let bad = |what: &str| PubSubError::BadConfig(format!("{var}: {what} {one:?}"));
    use ConfigChange as C;
    Ok(Some(match var {
        "pubsub#title" => C::Title(one.to_owned()),
        "pubsub#description" => C::Description(one.to_owned()),
        "pubsub#type" => C::PayloadType(one.to_owned()),
        "pubsub#max_items" => C::MaxItems(if one == "max" {
            MaxItems::Max
        } else {
            MaxItems::Count(parse_u64(var, one)?)
        }),
        "pubsub#item_expire" => {
            let n = if one.is_empty() {
                0
            } else {
                parse_u64(var, one)?
            };
            C::ItemExpire((n > 0).then_some(n))
        }
        "pubsub#persist_items" => C::PersistItems(parse_bool(var, one)?),
        "pubsub#deliver_payloads" => C::DeliverPayloads(parse_bool(var, one)?),
        "pubsub#deliver_notifications" => C::DeliverNotifications(parse_bool(var, one)?),
        "pubsub#notify_config" => C::NotifyConfig(parse_bool(var, one)?),
        "pubsub#notify_delete" => C::NotifyDelete(parse_bool(var, one)?),
        "pubsub#notify_retract" => C::NotifyRetract(parse_bool(var, one)?),
        "pubsub#notify_sub" => C::NotifySub(parse_bool(var, one)?),
        "pubsub#presence_based_delivery" => C::PresenceBasedDelivery(parse_bool(var, one)?),
        "pubsub#notification_type" => C::NotificationType(match one {
            "normal" => NotificationType::Normal,
            "headline" => NotificationType::Headline,
            _ => return Err(bad("unknown notification type")),
        }),
        "pubsub#send_last_published_item" => {
            C::SendLastPublished(SendLastPublished::parse(one).ok_or_else(|| bad("unknown value"))?)
        }
        "pubsub#access_model" => C::AccessModel(
            AccessModel::parse(one)
                .ok_or_else(|| PubSubError::UnsupportedAccessModel(one.to_owned()))?,
        ),
        "pubsub#publish_model" => {
            C::PublishModel(PublishModel::parse(one).ok_or_else(|| bad("unknown publish model"))?)
        }
        "pubsub#roster_groups_allowed" => C::RosterGroupsAllowed(values.to_vec()),
        "pubsub#max_payload_size" => C::MaxPayloadSize(parse_u64(var, one)?),
        _ => return Ok(None),
    }))
}

/// A submitted configuration form as a typed patch. Unknown fields are listed, not refused: a
/// configure ignores them (XEP-0004 3.2), a publish precondition fails on them (XEP-0060 7.1.5).
pub fn config_patch(fields: &Fields) -> Result<ConfigPatch, PubSubError> {
    let mut patch = ConfigPatch::default();
    for (var, values) in fields {
        if var == "FORM_TYPE" {
            continue;
        }
        match config_change(var, values)? {
            Some(change) => patch.changes.push(change),
            None => patch.unknown.push(var.clone()),
        }
    }
    Ok(patch)
}

/// publish-options (XEP-0060 7.1.5): a value this service cannot hold is a precondition that
/// is not met, not a malformed request.
pub fn publish_options_patch(fields: &Fields) -> Result<ConfigPatch, PubSubError> {
    let mut patch = ConfigPatch::default();
    for (var, values) in fields {
        if var == "FORM_TYPE" {
            continue;
        }
        match config_change(var, values) {
            Ok(Some(change)) => patch.changes.push(change),
            Ok(None) => patch.unknown.push(var.clone()),
            Err(_) => return Err(PubSubError::PreconditionNotMet(var.clone())),
        }
    }
    Ok(patch)
}

/// The subscription options form (XEP-0060 6.3): the options this service implements, and no
/// other (digests, message bodies and show-values filtering are not offered).
pub fn options_form(o: &SubOptions, kind: &str) -> Element {
    Element::new("x", NS_DATA)
        .attr("type", kind)
        .child(hidden_form_type(FORM_SUB_OPTIONS))
        .child(field(
            "pubsub#deliver",
            "boolean",
            "Enable delivery?",
            &[b(o.deliver.unwrap_or(true))],
        ))
}

/// Reads a submitted options form. Asking for an option that is not offered (a digest, a body,
/// show-values filtering) is refused (6.3.7: bad-request, invalid-options) rather than ignored.
pub fn apply_options(fields: &Fields) -> Result<SubOptions, PubSubError> {
    let mut o = SubOptions::default();
    for (var, values) in fields {
        let one = values.first().map(String::as_str).unwrap_or("");
        match var.as_str() {
            "pubsub#deliver" => o.deliver = Some(parse_bool(var, one)?),
            "pubsub#digest" | "pubsub#include_body" if !parse_bool(var, one)? => {}
            "pubsub#show-values" if values.is_empty() => {}
            "pubsub#digest" | "pubsub#include_body" | "pubsub#show-values" => {
                return Err(PubSubError::InvalidOptions(format!(
                    "{var} is not supported"
                )));
            }
            _ => {}
        }
    }
    Ok(o)
}

/// Node meta-data for disco#info (XEP-0060 5.4).
pub fn meta_data_form(r: &NodeRecord, owners: &[String], subscribers: usize) -> Element {
    let c = &r.config;
    let created = chrono_like(r.created_ms);
    Element::new("x", NS_DATA)
        .attr("type", "result")
        .child(hidden_form_type(FORM_META_DATA))
        .child(field(
            "pubsub#type",
            "text-single",
            "Payload type",
            &[&c.payload_type],
        ))
        .child(field(
            "pubsub#creator",
            "jid-single",
            "Node creator",
            &[&r.creator],
        ))
        .child(field(
            "pubsub#creation_date",
            "text-single",
            "Creation date",
            &[created],
        ))
        .child(field(
            "pubsub#title",
            "text-single",
            "A short name for the node",
            &[&c.title],
        ))
        .child(field(
            "pubsub#description",
            "text-single",
            "A description of the node",
            &[&c.description],
        ))
        .child(field("pubsub#owner", "jid-multi", "Node owners", owners))
        .child(field(
            "pubsub#access_model",
            "text-single",
            "Access model",
            &[c.access_model.as_str()],
        ))
        .child(field(
            "pubsub#publish_model",
            "text-single",
            "Publish model",
            &[c.publish_model.as_str()],
        ))
        .child(field(
            "pubsub#max_items",
            "text-single",
            "Max items",
            &[max_items_str(c.max_items)],
        ))
        .child(field(
            "pubsub#num_subscribers",
            "text-single",
            "Number of subscribers",
            &[subscribers.to_string()],
        ))
}

/// The approval form sent to owners for a pending subscription (XEP-0060 8.6.1).
pub fn approval_form(node: &str, subscriber: &str, subid: &str) -> Element {
    Element::new("x", NS_DATA)
        .attr("type", "form")
        .child(Element::new("title", NS_DATA).text("PubSub subscriber request"))
        .child(hidden_form_type(FORM_SUB_AUTH))
        .child(field("pubsub#subid", "hidden", "", &[subid.to_owned()]))
        .child(field(
            "pubsub#node",
            "text-single",
            "Node ID",
            &[node.to_owned()],
        ))
        .child(field(
            "pubsub#subscriber_jid",
            "jid-single",
            "Subscriber Address",
            &[subscriber.to_owned()],
        ))
        .child(field(
            "pubsub#allow",
            "boolean",
            "Allow this JID to subscribe to this pubsub node?",
            &[b(false)],
        ))
}

/// XEP-0082 date-time in UTC from milliseconds since the epoch.
pub fn chrono_like(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(chrono_like(0), "1970-01-01T00:00:00Z");
        assert_eq!(chrono_like(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn config_form_round_trips() {
        let mut c = NodeConfig::host_default(1000);
        c.access_model = AccessModel::Whitelist;
        c.max_items = MaxItems::Max;
        c.roster_groups_allowed = vec!["a".into(), "b".into()];
        let (_, fields) = parse(&config_form(&c, "form"));
        let patch = config_patch(&fields).unwrap();
        assert!(patch.unknown.is_empty(), "{:?}", patch.unknown);
        assert_eq!(patch.applied_to(&NodeConfig::host_default(5)), c);
        assert!(patch.check_preconditions(&c).is_ok());
        let mut other = Fields::new();
        other.insert("pubsub#access_model".into(), vec!["open".into()]);
        assert!(matches!(
            publish_options_patch(&other)
                .unwrap()
                .check_preconditions(&c),
            Err(PubSubError::PreconditionNotMet(_))
        ));
        // A value the service cannot hold is an unmet precondition (XEP-0060 7.1.5).
        other.insert("pubsub#access_model".into(), vec!["bogus".into()]);
        assert!(matches!(
            publish_options_patch(&other),
            Err(PubSubError::PreconditionNotMet(_))
        ));
    }
}
