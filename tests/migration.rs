//! Moving users' PEP data into stratus (XEP-0227): data made through the server's own PEP by a
//! real client, exported into XEP-0227 (Prosody: prosody-migrator; ejabberd:
//! contrib/ejabberd/mod_stratus_pep_export), loaded by `stratus import`, then served by stratus
//! through the same kind of server delegating PEP to it, identically: item ids, payloads, access
//! models and max_items.

mod common;

use std::path::Path;
use std::process::Command;

use common::pep::*;
use common::*;
use stratus::xml::Element;

const MOOD: &str = "http://jabber.org/protocol/mood";
const DEVICES: &str = "eu.siacs.conversations.axolotl.devicelist";
const BOOKMARKS: &str = "urn:xmpp:bookmarks:1";

/// prosody-migrator from the server's internal store into XEP-0227, one USER@HOST.xml per user,
/// as ../shared/notes/xmpp-servers.md says. The migrator writes into Prosody's data path
/// (/var/lib/prosody, fixed in the program), so it runs in a private mount namespace where that
/// directory is `out`; it runs as the prosody user, so the files are made readable to it.
pub fn prosody_export(server: &Server, out: &Path) {
    std::fs::create_dir_all(out).unwrap();
    let data = server.dir.join("data");
    let config = server.dir.join("migrator.cfg.lua");
    std::fs::write(
        &config,
        format!(
            "input {{ hosts = {{ [\"localhost\"] = {{ \"accounts\", \"roster\", \"pep-pubsub\" }} }}; type = \"internal\"; path = {data:?} }}\n\
             output {{ type = \"xep0227\" }}\n"
        ),
    )
    .unwrap();
    run_ok(
        Command::new("chmod")
            .args(["-R", "a+rwX"])
            .arg(&server.dir)
            .arg(out),
    );
    run_ok(
        Command::new("unshare")
            .args(["-m", "sh", "-c"])
            .arg("mount --bind \"$0\" /var/lib/prosody && exec prosody-migrator \"$@\"")
            .arg(out)
            .arg(format!("--config={}", config.display()))
            .args(["input", "output"]),
    );
}

/// Runs a command that must succeed; returns what it printed.
fn run_ok(cmd: &mut Command) -> String {
    let run = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout).to_string();
    assert!(
        run.status.success(),
        "{cmd:?}: {stdout}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    stdout
}

/// contrib/ejabberd/mod_stratus_pep_export's command, through ejabberdctl.
fn ejabberd_export(server: &Server, out: &Path) {
    run_ok(
        Command::new(root().join("scripts/xmpp-server.sh"))
            .arg("ctl")
            .arg(&server.dir)
            .args(["stratus_export_pep", "localhost"])
            .arg(out),
    );
}

/// Runs the stratus binary on the embedded store in `data`; it must succeed; returns its output.
fn stratus_cmd(data: &Path, args: &[&std::ffi::OsStr]) -> String {
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_stratus"))
            .arg("--data-dir")
            .arg(data)
            .args(args),
    )
}

#[tokio::test]
async fn prosody_pep_data_moves_into_stratus() {
    pep_data_moves_into_stratus(Kind::Prosody).await;
}

#[tokio::test]
async fn ejabberd_pep_data_moves_into_stratus() {
    pep_data_moves_into_stratus(Kind::Ejabberd).await;
}

async fn pep_data_moves_into_stratus(kind: Kind) {
    let mut old = Server::unstarted(kind, false);
    old.builtin_pep = true;
    old.start();
    let mut alice = new_user(&old, "alice").await;
    let username = alice.jid().node().unwrap().to_owned();
    publish(
        &mut alice,
        MOOD,
        "m1",
        Element::new("mood", MOOD).child(Element::new("happy", MOOD)),
        &[],
    )
    .await;
    publish(
        &mut alice,
        DEVICES,
        "current",
        Element::new("list", DEVICES).child(Element::new("device", DEVICES).attr("id", "4242")),
        &[("pubsub#access_model", "open")],
    )
    .await;
    // XEP-0060 8.1.3: created with a configuration (ejabberd 23.01's publish-options do not
    // know pubsub#max_items).
    let create = Element::new("iq", stratus::client::NS_CLIENT)
        .attr("type", "set")
        .child(
            Element::new("pubsub", "http://jabber.org/protocol/pubsub")
                .child(
                    Element::new("create", "http://jabber.org/protocol/pubsub")
                        .attr("node", BOOKMARKS),
                )
                .child(
                    Element::new("configure", "http://jabber.org/protocol/pubsub").child(
                        config_form(&[
                            ("pubsub#persist_items", "1"),
                            ("pubsub#max_items", "100"),
                            ("pubsub#send_last_published_item", "never"),
                            ("pubsub#access_model", "whitelist"),
                        ]),
                    ),
                ),
        );
    let r = alice.iq(create).await.unwrap();
    assert_eq!(r.get_attr("type"), Some("result"), "{r}");
    for room in ["a@conference.localhost", "b@conference.localhost"] {
        publish(
            &mut alice,
            BOOKMARKS,
            room,
            Element::new("conference", BOOKMARKS).attr("name", room),
            &[],
        )
        .await;
    }
    drop(alice);
    let out = old.dir.join("export");
    match kind {
        // prosody-migrator reads the store of a stopped server.
        Kind::Prosody => {
            old.stop();
            prosody_export(&old, &out);
        }
        // mod_stratus_pep_export reads the running server's tables.
        Kind::Ejabberd => {
            ejabberd_export(&old, &out);
            old.stop();
        }
    }
    let files: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");

    // stratus import, twice: the same counts, and (below) the same data.
    let data = tempfile::tempdir().unwrap();
    let mut args: Vec<&std::ffi::OsStr> = vec!["import".as_ref()];
    args.extend(files.iter().map(|f| f.as_os_str()));
    let import = || stratus_cmd(&data.path().join("data"), &args);
    let first = import();
    assert!(first.contains("1 users, 3 nodes, 4 items"), "{first}");
    assert_eq!(import(), first);

    // Served by stratus through a Prosody delegating PEP to it: the same account logs in there.
    let new = Server::start_private_pep(kind);
    let stratus = Stratus::spawn_with_data(
        &new.component_addr(),
        "pubsub.localhost",
        &data.path().join("data"),
    );
    stratus::client::Client::register(&new.c2s_addr(), "localhost", &username, "pass")
        .await
        .unwrap();
    let mut alice = login(&new, &username, "res").await;
    // Served once the server shows stratus's PEP on the account (it asks stratus on connect).
    account_info_with(
        &mut alice,
        &["http://jabber.org/protocol/pubsub#publish-options"],
    )
    .await;
    let mut bob = new_user(&new, "bob").await;
    let me = bare(&alice);
    let mood = get_items(&mut alice, &me, MOOD).await;
    assert_eq!(item_ids(&mood), ["m1"], "{mood}");
    assert!(mood.to_xml().contains("<happy/>"), "{mood}");
    let devices = get_items(&mut alice, &me, DEVICES).await;
    assert_eq!(item_ids(&devices), ["current"], "{devices}");
    assert!(
        devices.to_xml().contains("id='4242'") || devices.to_xml().contains("id=\"4242\""),
        "{devices}"
    );
    assert_eq!(
        item_ids(&get_items(&mut alice, &me, BOOKMARKS).await),
        ["a@conference.localhost", "b@conference.localhost"]
    );
    // The access models came along: open for the device list, presence for the mood (XEP-0163
    // default), whitelist for the bookmarks.
    assert_eq!(
        item_ids(&get_items(&mut bob, &me, DEVICES).await),
        ["current"]
    );
    let mood = get_items(&mut bob, &me, MOOD).await;
    assert_eq!(
        error_condition(&mood).as_deref(),
        Some("not-authorized"),
        "{mood}"
    );
    let marks = get_items(&mut bob, &me, BOOKMARKS).await;
    assert_eq!(
        error_condition(&marks).as_deref(),
        Some("not-allowed"),
        "{marks}"
    );
    // max_items (100) came along too: a third bookmark keeps the other two.
    publish(
        &mut alice,
        BOOKMARKS,
        "c@conference.localhost",
        Element::new("conference", BOOKMARKS),
        &[],
    )
    .await;
    assert_eq!(
        item_ids(&get_items(&mut alice, &me, BOOKMARKS).await).len(),
        3
    );

    // The round trip: what stratus exports, imported into another store, exports the same.
    drop(stratus);
    let once = data.path().join("once.xml");
    let said = stratus_cmd(
        &data.path().join("data"),
        &["export".as_ref(), once.as_os_str()],
    );
    // Four nodes: the third bookmark also wrote the XEP-0048 PEP list (XEP-0402 #compat-pep,
    // the server delegating private storage too).
    assert!(said.contains("1 users, 4 nodes, 6 items"), "{said}");
    let again = tempfile::tempdir().unwrap();
    stratus_cmd(
        &again.path().join("data"),
        &["import".as_ref(), once.as_os_str()],
    );
    let twice = again.path().join("twice.xml");
    stratus_cmd(
        &again.path().join("data"),
        &["export".as_ref(), twice.as_os_str()],
    );
    let (once, twice) = (
        std::fs::read_to_string(&once).unwrap(),
        std::fs::read_to_string(&twice).unwrap(),
    );
    assert_eq!(once, twice);
    assert!(
        once.contains("c@conference.localhost") && once.contains("4242"),
        "{once}"
    );
}
