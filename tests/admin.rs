//! The service administrators' ad-hoc commands (XEP-0050, in the style of XEP-0133) and the
//! owners' pending-subscription command (XEP-0060 8.7), through real Prosody and ejabberd; and
//! `stratus admin`, the same commands from the command line through the HTTP listener.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use stratus::client::Client;
use stratus::xml::Element;

const PS: &str = "http://jabber.org/protocol/pubsub";
const OWNER: &str = "http://jabber.org/protocol/pubsub#owner";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";
const COMMANDS: &str = "http://jabber.org/protocol/commands";
const DATA: &str = "jabber:x:data";
const DISCO_ITEMS: &str = "http://jabber.org/protocol/disco#items";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
const GET_PENDING: &str = "http://jabber.org/protocol/pubsub#get-pending";
const SUB_AUTH: &str = "http://jabber.org/protocol/pubsub#subscribe_authorization";
const TOKEN: &str = "test-admin-token-0123456789";

/// A stratus whose `[admin] jids` is `admin`, with its HTTP listener and admin token.
struct Admin {
    stratus: Stratus,
    _lease: DomainLease,
    svc: String,
    config: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn start(server: &Server, admin: &str) -> Admin {
    let lease = lease_domain(server);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("stratus.toml");
    let port = free_port();
    std::fs::write(
        &config,
        format!(
            "[http]\nlisten = \"127.0.0.1:{port}\"\n\n[admin]\njids = [\"{admin}\"]\n\
             token = \"{TOKEN}\"\n"
        ),
    )
    .unwrap();
    let stratus = Stratus::start_with(
        server,
        &lease.domain,
        &["--config", config.to_str().unwrap()],
    );
    Admin {
        stratus,
        svc: lease.domain.clone(),
        _lease: lease,
        config,
        _dir: dir,
    }
}

fn submit(fields: &[(&str, &str)]) -> Element {
    let mut x = Element::new("x", DATA).attr("type", "submit");
    for (var, value) in fields {
        x.push_child(
            Element::new("field", DATA)
                .attr("var", *var)
                .child(Element::new("value", DATA).text(*value)),
        );
    }
    x
}

/// XEP-0050 4: one `<command/>` request; `form`: the fields submitted with it.
async fn command(c: &mut Client, svc: &str, node: &str, form: Option<Element>) -> Element {
    let mut cmd = Element::new("command", COMMANDS).attr("node", node).attr(
        "action",
        if form.is_some() {
            "complete"
        } else {
            "execute"
        },
    );
    if let Some(x) = form {
        cmd.push_child(x);
    }
    c.iq(iq("set", svc, cmd)).await.unwrap()
}

/// The `<command/>` of a result, asserting it is one.
fn answered(r: &Element) -> &Element {
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    r.get_child("command", COMMANDS)
        .unwrap_or_else(|| panic!("no command in {r}"))
}

/// The values of a form field (`<x/>` in the command).
fn field_values(cmd: &Element, var: &str) -> Vec<String> {
    let Some(x) = cmd.get_child("x", DATA) else {
        return Vec::new();
    };
    x.children()
        .filter(|f| f.name() == "field" && f.get_attr("var") == Some(var))
        .flat_map(|f| {
            f.children()
                .filter(|v| v.name() == "value")
                .map(|v| v.text_content())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The rows of a result form (XEP-0004 3.4 `<item/>`s), each as (var, value) pairs.
fn rows(cmd: &Element) -> Vec<Vec<(String, String)>> {
    let x = cmd
        .get_child("x", DATA)
        .unwrap_or_else(|| panic!("no result form in {cmd}"));
    assert_eq!(x.get_attr("type"), Some("result"), "{x}");
    x.children()
        .filter(|i| i.name() == "item")
        .map(|i| {
            i.children()
                .map(|f| {
                    let v = f
                        .children()
                        .find(|v| v.name() == "value")
                        .map(|v| v.text_content())
                        .unwrap_or_default();
                    (f.get_attr("var").unwrap_or_default().to_owned(), v)
                })
                .collect()
        })
        .collect()
}

fn cell<'a>(row: &'a [(String, String)], var: &str) -> &'a str {
    row.iter()
        .find(|(v, _)| v == var)
        .map(|(_, x)| x.as_str())
        .unwrap_or_else(|| panic!("no {var} in {row:?}"))
}

async fn ok(c: &mut Client, svc: &str, kind: &str, payload: Element) -> Element {
    let r = c.iq(iq(kind, svc, payload)).await.unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    r
}

async fn subscribe(c: &mut Client, svc: &str, node: &str) -> Element {
    let jid = c.jid().to_string();
    ok(
        c,
        svc,
        "set",
        Element::new("pubsub", PS).child(
            Element::new("subscribe", PS)
                .attr("node", node)
                .attr("jid", jid),
        ),
    )
    .await
}

/// The command nodes disco#items lists for `c` (XEP-0050 2.2).
async fn listed_commands(c: &mut Client, svc: &str) -> Vec<String> {
    let r = ok(
        c,
        svc,
        "get",
        Element::new("query", DISCO_ITEMS).attr("node", COMMANDS),
    )
    .await;
    r.get_child("query", DISCO_ITEMS)
        .unwrap()
        .children()
        .filter_map(|i| i.get_attr("node").map(str::to_owned))
        .collect()
}

/// An administrator runs every command on a node someone else owns; a user who is not one is
/// refused each of them and sees only the owners' command (XEP-0050 4.6: forbidden).
async fn admin_commands_act_as_an_owner_and_others_are_refused(kind: Kind) {
    let server = shared(kind);
    let mut root = new_user(server, "adm").await;
    let admin_jid = root.jid().to_bare().to_string();
    let env = start(server, &admin_jid);
    let svc = env.svc.as_str();
    let mut alice = new_user(server, "ado").await;
    let mut bob = new_user(server, "adb").await;
    let mut mallory = new_user(server, "adm").await;
    let node = unique("adminnode");
    // A whitelist node: nobody but its owner may read it (XEP-0060 4.5), yet its administrator
    // manages it.
    create_with_access(&mut alice, svc, &node, "whitelist").await;
    ok(&mut alice, svc, "set", publish_item(&node, "one")).await;
    ok(&mut alice, svc, "set", publish_item(&node, "two")).await;
    // bob is let in, subscribes: he will hear what the administrator does.
    ok(
        &mut alice,
        svc,
        "set",
        Element::new("pubsub", OWNER).child(
            Element::new("affiliations", OWNER)
                .attr("node", node.as_str())
                .child(
                    Element::new("affiliation", OWNER)
                        .attr("jid", bob.jid().to_bare().to_string())
                        .attr("affiliation", "member"),
                ),
        ),
    )
    .await;
    subscribe(&mut bob, svc, &node).await;

    // XEP-0030 / XEP-0050 2.1: the service offers commands, and the pending-subscription
    // command of XEP-0060 8.7.
    let info = ok(&mut mallory, svc, "get", Element::new("query", DISCO_INFO)).await;
    let features: Vec<&str> = info
        .get_child("query", DISCO_INFO)
        .unwrap()
        .children()
        .filter_map(|f| f.get_attr("var"))
        .collect();
    assert!(features.contains(&COMMANDS), "{info}");
    assert!(features.contains(&GET_PENDING), "{info}");

    // What each one is offered.
    let admin_list = listed_commands(&mut root, svc).await;
    let user_list = listed_commands(&mut mallory, svc).await;
    let admin_commands: Vec<&String> = admin_list
        .iter()
        .filter(|n| n.as_str() != GET_PENDING)
        .collect();
    assert!(admin_commands.len() >= 7, "{admin_list:?}");
    assert_eq!(user_list, vec![GET_PENDING.to_owned()]);

    // A user who is not an administrator: each admin command is forbidden, and nothing changed.
    for cmd in &admin_commands {
        let r = command(&mut mallory, svc, cmd, Some(submit(&[("node", &node)]))).await;
        assert_eq!(r.get_attr("type"), Some("error"), "{cmd}: {r}");
        assert_eq!(error_condition(&r).as_deref(), Some("forbidden"), "{r}");
        let r = command(&mut mallory, svc, cmd, None).await;
        assert_eq!(error_condition(&r).as_deref(), Some("forbidden"), "{r}");
    }
    assert_eq!(
        item_ids(&get_items(&mut alice, svc, &node).await),
        ["one", "two"]
    );
    // An unknown command (XEP-0050 4.6: item-not-found).
    let r = command(&mut root, svc, "urn:nothing#here", None).await;
    assert_eq!(
        error_condition(&r).as_deref(),
        Some("item-not-found"),
        "{r}"
    );

    // List nodes: alice's node with its owner and counts.
    let list = command(&mut root, svc, "urn:stratus:admin#list-nodes", None).await;
    let cmd = answered(&list);
    assert_eq!(cmd.get_attr("status"), Some("completed"), "{list}");
    let all = rows(cmd);
    let row = all
        .iter()
        .find(|r| cell(r, "node") == node)
        .unwrap_or_else(|| panic!("{node} not listed: {list}"));
    assert_eq!(cell(row, "owners"), alice.jid().to_bare().to_string());
    assert_eq!(cell(row, "items"), "2");
    assert_eq!(cell(row, "subscriptions"), "1");

    // The administrator reads the whitelist node through XEP-0060 itself, as an owner.
    assert_eq!(
        item_ids(&get_items(&mut root, svc, &node).await),
        ["one", "two"]
    );
    let r = get_items(&mut mallory, svc, &node).await;
    assert_eq!(error_condition(&r).as_deref(), Some("not-allowed"), "{r}");

    // Node configuration: the first stage asks for the node, the second shows the node's
    // configuration form, the third forces a change.
    let r = command(&mut root, svc, "urn:stratus:admin#node-config", None).await;
    let cmd = answered(&r);
    assert_eq!(cmd.get_attr("status"), Some("executing"), "{r}");
    let sessionid = cmd.get_attr("sessionid").unwrap().to_owned();
    let r = command(
        &mut root,
        svc,
        "urn:stratus:admin#node-config",
        Some(submit(&[("node", &node)])),
    )
    .await;
    let cmd = answered(&r);
    assert_eq!(cmd.get_attr("status"), Some("executing"), "{r}");
    assert_eq!(field_values(cmd, "pubsub#access_model"), ["whitelist"]);
    let mut change = submit(&[
        ("FORM_TYPE", "http://jabber.org/protocol/pubsub#node_config"),
        ("node", &node),
        ("pubsub#title", "Forced by the administrator"),
    ]);
    change.set_attr("type", "submit");
    let mut cmd = Element::new("command", COMMANDS)
        .attr("node", "urn:stratus:admin#node-config")
        .attr("sessionid", sessionid)
        .attr("action", "complete");
    cmd.push_child(change);
    let r = root.iq(iq("set", svc, cmd)).await.unwrap();
    assert_eq!(answered(&r).get_attr("status"), Some("completed"), "{r}");
    let conf = ok(
        &mut alice,
        svc,
        "get",
        Element::new("pubsub", OWNER)
            .child(Element::new("configure", OWNER).attr("node", node.as_str())),
    )
    .await;
    let title = conf
        .get_child("pubsub", OWNER)
        .and_then(|p| p.get_child("configure", OWNER))
        .map(|c| field_values(c, "pubsub#title"))
        .unwrap_or_default();
    assert_eq!(title, ["Forced by the administrator"], "{conf}");

    // Delete an item: gone, and the subscriber is told (XEP-0060 7.2.2.1).
    let r = command(
        &mut root,
        svc,
        "urn:stratus:admin#delete-item",
        Some(submit(&[("node", &node), ("item", "one")])),
    )
    .await;
    assert_eq!(answered(&r).get_attr("status"), Some("completed"), "{r}");
    let retract = bob
        .wait_for(T, |m| {
            m.get_child("event", EVENT)
                .and_then(|e| e.get_child("items", EVENT))
                .and_then(|i| i.get_child("retract", EVENT))
                .is_some_and(|r| r.get_attr("id") == Some("one"))
        })
        .await;
    assert!(retract.is_ok(), "bob got no retract: {retract:?}");
    assert_eq!(item_ids(&get_items(&mut alice, svc, &node).await), ["two"]);

    // List and cancel subscriptions: bob's goes, and he is told (8.8.4: subscription none).
    let r = command(
        &mut root,
        svc,
        "urn:stratus:admin#list-subscriptions",
        Some(submit(&[("node", &node)])),
    )
    .await;
    let subs = rows(answered(&r));
    assert_eq!(subs.len(), 1, "{r}");
    assert_eq!(cell(&subs[0], "jid"), bob.jid().to_string());
    assert_eq!(cell(&subs[0], "subscription"), "subscribed");
    let bob_jid = bob.jid().to_string();
    let r = command(
        &mut root,
        svc,
        "urn:stratus:admin#cancel-subscription",
        Some(submit(&[("node", &node), ("jid", &bob_jid)])),
    )
    .await;
    assert_eq!(answered(&r).get_attr("status"), Some("completed"), "{r}");
    let told = bob
        .wait_for(T, |m| {
            m.get_child("event", EVENT)
                .and_then(|e| e.get_child("subscription", EVENT))
                .is_some_and(|s| s.get_attr("subscription") == Some("none"))
        })
        .await;
    assert!(told.is_ok(), "bob was not told: {told:?}");
    let r = command(
        &mut root,
        svc,
        "urn:stratus:admin#list-subscriptions",
        Some(submit(&[("node", &node)])),
    )
    .await;
    assert!(rows(answered(&r)).is_empty(), "{r}");

    // Purge, then delete the node.
    let r = command(
        &mut root,
        svc,
        "urn:stratus:admin#purge-node",
        Some(submit(&[("node", &node)])),
    )
    .await;
    assert_eq!(answered(&r).get_attr("status"), Some("completed"), "{r}");
    assert!(item_ids(&get_items(&mut alice, svc, &node).await).is_empty());
    let r = command(
        &mut root,
        svc,
        "urn:stratus:admin#delete-node",
        Some(submit(&[("node", &node)])),
    )
    .await;
    assert_eq!(answered(&r).get_attr("status"), Some("completed"), "{r}");
    let r = get_items(&mut alice, svc, &node).await;
    assert_eq!(
        error_condition(&r).as_deref(),
        Some("item-not-found"),
        "{r}"
    );
    // A command on a node that does not exist: the core's error, as for any request.
    let r = command(
        &mut root,
        svc,
        "urn:stratus:admin#purge-node",
        Some(submit(&[("node", &node)])),
    )
    .await;
    assert_eq!(
        error_condition(&r).as_deref(),
        Some("item-not-found"),
        "{r}"
    );
    // A required field left out (XEP-0050 4.6: bad-request).
    let r = command(
        &mut root,
        svc,
        "urn:stratus:admin#delete-item",
        Some(submit(&[("node", &node)])),
    )
    .await;
    assert_eq!(error_condition(&r).as_deref(), Some("bad-request"), "{r}");
    // A cancelled command ends there (XEP-0050 4.3).
    let cancel = Element::new("command", COMMANDS)
        .attr("node", "urn:stratus:admin#delete-node")
        .attr("sessionid", "s1")
        .attr("action", "cancel");
    let r = root.iq(iq("set", svc, cancel)).await.unwrap();
    assert_eq!(answered(&r).get_attr("status"), Some("canceled"), "{r}");
    log_has_no_panic(&env.stratus.log_text());
}

/// XEP-0060 8.7: an owner asks for the nodes with pending subscription requests, picks one, and
/// gets the approval form (8.6) of each request again; approving it subscribes the requester.
/// Someone else cannot get another owner's requests.
async fn owners_get_pending_requests_again(kind: Kind) {
    let server = shared(kind);
    let root = new_user(server, "adr").await;
    let env = start(server, &root.jid().to_bare().to_string());
    let svc = env.svc.as_str();
    let mut alice = new_user(server, "apo").await;
    let mut bob = new_user(server, "apb").await;
    let mut mallory = new_user(server, "apm").await;
    // The approval forms go to the owner's bare JID (XEP-0060 8.6.1): alice is available.
    alice.send_presence().await.unwrap();
    let node = unique("pending");
    create_with_access(&mut alice, svc, &node, "authorize").await;
    let r = subscribe(&mut bob, svc, &node).await;
    assert!(r.to_string().contains("pending"), "{r}");
    // The approval form the subscription sent (8.6.1), taken so the one asked for is new.
    let first = alice
        .wait_for(T, |m| m.get_child("x", DATA).is_some())
        .await;
    assert!(first.is_ok(), "{first:?}");

    let r = command(&mut alice, svc, GET_PENDING, None).await;
    let cmd = answered(&r);
    assert_eq!(cmd.get_attr("status"), Some("executing"), "{r}");
    assert_eq!(field_values(cmd, "FORM_TYPE"), [SUB_AUTH]);
    let x = cmd.get_child("x", DATA).unwrap();
    let options: Vec<String> = x
        .children()
        .filter(|f| f.get_attr("var") == Some("pubsub#node"))
        .flat_map(|f| f.children().filter(|o| o.name() == "option"))
        .filter_map(|o| o.children().next().map(|v| v.text_content()))
        .collect();
    assert_eq!(options, std::slice::from_ref(&node), "{r}");

    // Someone who owns nothing has no requests; naming alice's node is forbidden.
    let r = command(&mut mallory, svc, GET_PENDING, None).await;
    assert_eq!(answered(&r).get_attr("status"), Some("completed"), "{r}");
    let r = command(
        &mut mallory,
        svc,
        GET_PENDING,
        Some(submit(&[("FORM_TYPE", SUB_AUTH), ("pubsub#node", &node)])),
    )
    .await;
    assert_eq!(error_condition(&r).as_deref(), Some("forbidden"), "{r}");

    let r = command(
        &mut alice,
        svc,
        GET_PENDING,
        Some(submit(&[("FORM_TYPE", SUB_AUTH), ("pubsub#node", &node)])),
    )
    .await;
    assert_eq!(answered(&r).get_attr("status"), Some("completed"), "{r}");
    let form = alice
        .wait_for(T, |m| {
            m.name() == "message"
                && m.get_child("x", DATA).is_some_and(|x| {
                    x.children().any(|f| {
                        f.get_attr("var") == Some("pubsub#node")
                            && f.children().any(|v| v.text_content() == node)
                    })
                })
        })
        .await
        .expect("the approval form again (8.7.1)");
    let x = form.get_child("x", DATA).unwrap();
    assert_eq!(
        field_values_of(x, "pubsub#subscriber_jid"),
        [bob.jid().to_string()]
    );
    let subid = field_values_of(x, "pubsub#subid");
    // 8.6.2: the owner approves with the form.
    let approval = Element::new("message", "jabber:client")
        .attr("to", svc)
        .child(submit(&[
            ("FORM_TYPE", SUB_AUTH),
            (
                "pubsub#subid",
                subid.first().map(String::as_str).unwrap_or(""),
            ),
            ("pubsub#node", &node),
            ("pubsub#subscriber_jid", &bob.jid().to_string()),
            ("pubsub#allow", "true"),
        ]));
    alice.send(&approval).await.unwrap();
    let approved = bob
        .wait_for(T, |m| {
            m.get_child("event", EVENT)
                .and_then(|e| e.get_child("subscription", EVENT))
                .is_some_and(|s| s.get_attr("subscription") == Some("subscribed"))
        })
        .await;
    assert!(approved.is_ok(), "bob was not approved: {approved:?}");
    // Nothing pending any more.
    let r = command(&mut alice, svc, GET_PENDING, None).await;
    assert_eq!(answered(&r).get_attr("status"), Some("completed"), "{r}");
    drop(root);
    log_has_no_panic(&env.stratus.log_text());
}

fn field_values_of(x: &Element, var: &str) -> Vec<String> {
    x.children()
        .filter(|f| f.get_attr("var") == Some(var))
        .flat_map(|f| {
            f.children()
                .filter(|v| v.name() == "value")
                .map(|v| v.text_content())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `stratus admin` with the running instance's configuration.
fn cli(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stratus"))
        .args(["--config", config.to_str().unwrap()])
        .args([
            "--server",
            "127.0.0.1:1",
            "--domain",
            "cli.localhost",
            "--secret",
            "x",
        ])
        .arg("admin")
        .args(args)
        .output()
        .unwrap()
}

/// `stratus admin` runs the administrators' commands on the running instance, as the service;
/// subscribers are told as with the ad-hoc commands; a wrong token is refused.
async fn the_command_line_runs_the_same_commands(kind: Kind) {
    let server = shared(kind);
    let env = start(server, "nobody@localhost");
    let svc = env.svc.as_str();
    let mut alice = new_user(server, "aco").await;
    let mut bob = new_user(server, "acb").await;
    let node = unique("clinode");
    // Subscribers hear of a deletion when the node says so (pubsub#notify_delete).
    create_configured(&mut alice, svc, &node, "pubsub#notify_delete", "1").await;
    ok(&mut alice, svc, "set", publish_item(&node, "x1")).await;
    subscribe(&mut bob, svc, &node).await;

    let config = env.config.clone();
    let list = cli(&config, &["list-nodes"]);
    let out = String::from_utf8_lossy(&list.stdout).into_owned();
    assert!(
        list.status.success(),
        "{out} {}",
        String::from_utf8_lossy(&list.stderr)
    );
    let line = out
        .lines()
        .find(|l| l.split('\t').any(|c| c == node))
        .unwrap_or_else(|| panic!("{node} not in {out}"));
    assert!(line.contains(&alice.jid().to_bare().to_string()), "{line}");

    let shown = cli(&config, &["node-config", &format!("node={node}")]);
    let out = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(shown.status.success(), "{out}");
    assert!(
        out.lines().any(|l| l == "pubsub#access_model = open"),
        "{out}"
    );
    let set = cli(
        &config,
        &["node-config", &format!("node={node}"), "pubsub#max_items=7"],
    );
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let shown = cli(&config, &["node-config", &format!("node={node}")]);
    let out = String::from_utf8_lossy(&shown.stdout).into_owned();
    assert!(out.lines().any(|l| l == "pubsub#max_items = 7"), "{out}");

    let del = cli(&config, &["delete-node", &format!("node={node}")]);
    assert!(
        del.status.success(),
        "{} {}",
        String::from_utf8_lossy(&del.stdout),
        String::from_utf8_lossy(&del.stderr)
    );
    // XEP-0060 8.4.2: the subscriber hears of the deletion.
    let deleted = bob
        .wait_for(T, |m| {
            m.get_child("event", EVENT)
                .and_then(|e| e.get_child("delete", EVENT))
                .is_some_and(|d| d.get_attr("node") == Some(node.as_str()))
        })
        .await;
    assert!(deleted.is_ok(), "bob was not told: {deleted:?}");
    let r = get_items(&mut alice, svc, &node).await;
    assert_eq!(
        error_condition(&r).as_deref(),
        Some("item-not-found"),
        "{r}"
    );
    let missing = cli(&config, &["purge-node", &format!("node={node}")]);
    assert!(!missing.status.success());
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("item-not-found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );

    // The token of another configuration is refused (401), and nothing runs.
    let node2 = unique("clikeep");
    create_with_access(&mut alice, svc, &node2, "open").await;
    let text = std::fs::read_to_string(&config).unwrap();
    let wrong = config.with_file_name("wrong.toml");
    std::fs::write(&wrong, text.replace(TOKEN, "not-the-token")).unwrap();
    let refused = cli(&wrong, &["delete-node", &format!("node={node2}")]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(item_ids(&get_items(&mut alice, svc, &node2).await).is_empty());
    log_has_no_panic(&env.stratus.log_text());
}

#[tokio::test]
async fn prosody_admin_commands_act_as_an_owner_and_others_are_refused() {
    admin_commands_act_as_an_owner_and_others_are_refused(Kind::Prosody).await;
}

#[tokio::test]
async fn ejabberd_admin_commands_act_as_an_owner_and_others_are_refused() {
    admin_commands_act_as_an_owner_and_others_are_refused(Kind::Ejabberd).await;
}

#[tokio::test]
async fn prosody_owners_get_pending_requests_again() {
    owners_get_pending_requests_again(Kind::Prosody).await;
}

#[tokio::test]
async fn ejabberd_owners_get_pending_requests_again() {
    owners_get_pending_requests_again(Kind::Ejabberd).await;
}

#[tokio::test]
async fn prosody_the_command_line_runs_the_same_commands() {
    the_command_line_runs_the_same_commands(Kind::Prosody).await;
}

#[tokio::test]
async fn ejabberd_the_command_line_runs_the_same_commands() {
    the_command_line_runs_the_same_commands(Kind::Ejabberd).await;
}
