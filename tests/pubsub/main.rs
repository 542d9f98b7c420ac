//! XEP-0060 use cases through real Prosody and real ejabberd, each citing its section. Every test
//! runs once per server.

#[path = "../common/mod.rs"]
mod common;
mod discovery;
mod items;
mod owner;
mod subscriptions;

use std::time::Duration;

use common::*;
use discovery::*;
use items::*;
use owner::*;
use stratus::client::{Client, NS_CLIENT};
use stratus::xml::{Element, Limits, parse_element};
use subscriptions::*;

const PS: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const ERRORS: &str = "http://jabber.org/protocol/pubsub#errors";
const DATA: &str = "jabber:x:data";
const RSM: &str = "http://jabber.org/protocol/rsm";

/// Parses a literal stanza written as in the XEP's examples (jabber:client).
fn x(xml: &str) -> Element {
    parse_element(
        &xml.replace("<iq ", "<iq xmlns='jabber:client' "),
        Limits::default(),
    )
    .unwrap()
}

fn pubsub_el(ns: &str, child: Element) -> Element {
    Element::new("pubsub", ns).child(child)
}

fn app_error(reply: &Element) -> Option<String> {
    let err = reply.get_child("error", NS_CLIENT)?;
    err.children()
        .find(|c| c.ns() == ERRORS)
        .map(|c| c.name().to_owned())
}

fn assert_error(reply: &Element, condition: &str, app: Option<&str>) {
    assert_eq!(reply.get_attr("type"), Some("error"), "{reply}");
    assert_eq!(
        error_condition(reply).as_deref(),
        Some(condition),
        "{reply}"
    );
    assert_eq!(app_error(reply).as_deref(), app, "{reply}");
}

fn assert_result(reply: &Element) {
    assert_eq!(reply.get_attr("type"), Some("result"), "{reply}");
}

async fn create(c: &mut Client, svc: &str, node: &str) {
    let r = c
        .iq(iq(
            "set",
            svc,
            pubsub_el(PS, Element::new("create", PS).attr("node", node)),
        ))
        .await
        .unwrap();
    assert_result(&r);
}

async fn publish(c: &mut Client, svc: &str, node: &str, id: Option<&str>, body: &str) -> Element {
    let mut item = Element::new("item", PS).child(Element::new("entry", "urn:example").text(body));
    if let Some(id) = id {
        item.set_attr("id", id);
    }
    c.iq(iq(
        "set",
        svc,
        pubsub_el(
            PS,
            Element::new("publish", PS).attr("node", node).child(item),
        ),
    ))
    .await
    .unwrap()
}

async fn subscribe(c: &mut Client, svc: &str, node: &str) -> Element {
    let jid = c.jid().to_string();
    c.iq(iq(
        "set",
        svc,
        pubsub_el(
            PS,
            Element::new("subscribe", PS)
                .attr("node", node)
                .attr("jid", jid),
        ),
    ))
    .await
    .unwrap()
}

async fn event(c: &mut Client) -> Element {
    c.wait_for(T, |e| {
        e.name() == "message" && e.get_child("event", EVENT).is_some()
    })
    .await
    .expect("an event")
}

async fn no_event(c: &mut Client) {
    assert!(
        c.wait_for(Duration::from_millis(400), |e| e.name() == "message"
            && e.get_child("event", EVENT).is_some())
            .await
            .is_err(),
        "unexpected event"
    );
}

macro_rules! both_servers {
    ($($name:ident),* $(,)?) => {
        mod prosody { use super::*; $( #[tokio::test] async fn $name() { super::$name(Kind::Prosody).await } )* }
        mod ejabberd { use super::*; $( #[tokio::test] async fn $name() { super::$name(Kind::Ejabberd).await } )* }
    };
}

both_servers!(
    publish_subscribe_and_event,
    create_errors_and_instant_node,
    retrieve_items_max_and_by_id,
    retract_and_purge_notify,
    publish_errors,
    publish_options_preconditions,
    subscribe_errors_and_unsubscribe,
    configure_get_set_and_notify,
    delete_with_redirect,
    affiliations_and_whitelist,
    authorize_access_model,
    user_subscriptions_and_affiliations,
    disco_nodes_and_meta_data,
    rsm_paging_over_items,
    subscription_options,
    owner_manages_subscriptions,
    node_configuration_fields,
    publish_only_affiliation,
    pipelined_publishes_keep_their_order,
    markup_characters_in_names,
    access_change_stops_delivery,
);

fn items_event(e: &Element) -> bool {
    e.name() == "message"
        && e.get_child("event", EVENT)
            .is_some_and(|ev| ev.get_child("items", EVENT).is_some())
}

/// An owner's configuration submission (8.2.4) of `fields`.
fn set_config(node: &str, svc: &str, fields: &[(&str, &str)]) -> Element {
    iq(
        "set",
        svc,
        pubsub_el(
            OWNER,
            Element::new("configure", OWNER)
                .attr("node", node)
                .child(config_form(fields)),
        ),
    )
}
