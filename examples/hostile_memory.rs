//! Memory under hostile input (issue 12), through a real server with PEP delegated to stratus:
//! stratus's resident memory before and after 10,000 hostile stanzas, and before and after two
//! floods of random XEP-0115 caps hashes (each asked about and answered with features that do not
//! hash to it). Run by scripts/bench-hostile.sh, which starts the server and stratus.
//!
//!   cargo run --release --example hostile_memory -- C2S_HOST:PORT STRATUS_PID [STANZAS] [CAPS]

use std::time::Duration;

use stratus::client::{Client, ClientConfig, NS_CLIENT};
use stratus::xml::Element;

const SVC: &str = "pubsub.localhost";
const DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";

type Error = Box<dyn std::error::Error>;

/// Resident memory of a process in KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

async fn user(addr: &str, prefix: &str) -> Result<Client, Error> {
    let name = format!("{prefix}{}", rand::random::<u32>());
    Client::register(addr, "localhost", &name, "pass").await?;
    Ok(Client::connect(&ClientConfig {
        addr: addr.into(),
        domain: "localhost".into(),
        username: name,
        password: "pass".into(),
        resource: "r".into(),
        ..ClientConfig::default()
    })
    .await?)
}

/// The i-th hostile stanza: each breaks one limit, in turn.
fn hostile(i: usize) -> String {
    match i % 4 {
        0 => format!(
            "<message to='{SVC}' id='h{i}'>{}{}</message>",
            "<a xmlns='urn:deep'>".repeat(100),
            "</a>".repeat(100)
        ),
        1 => format!(
            "<message to='{SVC}' id='h{i}'>{}</message>",
            (0..100)
                .map(|k| format!("<p{k}:e xmlns:p{k}='urn:p{k}'/>"))
                .collect::<String>()
        ),
        2 => format!(
            "<iq type='get' to='{SVC}' id='h{i}'><x xmlns='urn:x'{}/></iq>",
            (0..100).map(|k| format!(" a{k}='{k}'")).collect::<String>()
        ),
        _ => format!(
            "<iq type='get' to='{SVC}' id='h{i}'><query xmlns='urn:{}'/></iq>",
            "u".repeat(2000)
        ),
    }
}

async fn ping(c: &mut Client) -> Result<(), Error> {
    let iq = Element::new("iq", NS_CLIENT)
        .attr("type", "get")
        .attr("to", SVC)
        .child(Element::new("ping", "urn:xmpp:ping"));
    c.iq(iq).await?;
    Ok(())
}

/// Sends `n` presences with random caps hashes from `c` and answers every disco#info query.
async fn caps_flood(c: &mut Client, n: usize) -> Result<(), Error> {
    let mut asked = 0;
    for i in 0..n {
        let ver = format!("{:032x}=", rand::random::<u128>());
        let presence = Element::new("presence", NS_CLIENT).child(
            Element::new("c", "http://jabber.org/protocol/caps")
                .attr("hash", "sha-1")
                .attr("node", "https://flood.example")
                .attr("ver", ver),
        );
        c.send(&presence).await?;
        // Answer what was asked so far without waiting for every query.
        while let Ok(q) = c
            .wait_for(
                Duration::from_millis(if i + 1 == n { 2000 } else { 0 }),
                |s| s.name() == "iq" && s.get_child("query", DISCO_INFO).is_some(),
            )
            .await
        {
            let node = q
                .get_child("query", DISCO_INFO)
                .and_then(|q| q.get_attr("node"))
                .unwrap_or_default()
                .to_owned();
            let answer = Element::new("iq", NS_CLIENT)
                .attr("type", "result")
                .attr("id", q.get_attr("id").unwrap_or_default())
                .attr("to", q.get_attr("from").unwrap_or_default())
                .child(
                    Element::new("query", DISCO_INFO)
                        .attr("node", node)
                        .child(Element::new("feature", DISCO_INFO).attr("var", format!("urn:f{i}")))
                        .child(Element::new("feature", DISCO_INFO).attr("var", "urn:x+notify")),
                );
            c.send(&answer).await?;
            asked += 1;
        }
    }
    println!("  caps queries answered: {asked}");
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:5222".into());
    let pid: u32 = args.get(2).ok_or("STRATUS_PID")?.parse()?;
    let stanzas: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let caps: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let mut mallory = user(&addr, "mallory").await?;
    let mut alice = user(&addr, "alice").await?;
    let start = rss_kib(pid);
    // Warm up: every kind once, so that lazily built things are there before "before".
    for i in 0..100 {
        mallory.outbox().send_raw(hostile(i)).await?;
    }
    ping(&mut mallory).await?;
    let before = rss_kib(pid);
    let mut bounced = 0;
    for batch in 0..stanzas / 100 {
        let mut xml = String::new();
        for i in 0..100 {
            xml.push_str(&hostile(batch * 100 + i));
        }
        mallory.outbox().send_raw(xml).await?;
        ping(&mut mallory).await?;
        while mallory
            .wait_for(Duration::ZERO, |s| s.get_attr("type") == Some("error"))
            .await
            .is_ok()
        {
            bounced += 1;
        }
    }
    while mallory
        .wait_for(Duration::from_millis(500), |s| {
            s.get_attr("type") == Some("error")
        })
        .await
        .is_ok()
    {
        bounced += 1;
    }
    let after_hostile = rss_kib(pid);
    println!("hostile stanzas: {stanzas} sent, {bounced} bounced");
    caps_flood(&mut alice, caps / 2).await?;
    ping(&mut alice).await?;
    let after_caps1 = rss_kib(pid);
    caps_flood(&mut alice, caps / 2).await?;
    ping(&mut alice).await?;
    let after_caps2 = rss_kib(pid);
    println!("| moment | stratus RSS KiB | change KiB |");
    println!("|---|---|---|");
    println!("| connected, two users | {start} | |");
    println!(
        "| after 100 hostile stanzas (warm) | {before} | {} |",
        before as i64 - start as i64
    );
    println!(
        "| after {stanzas} more hostile stanzas | {after_hostile} | {} |",
        after_hostile as i64 - before as i64
    );
    println!(
        "| after {} random caps hashes | {after_caps1} | {} |",
        caps / 2,
        after_caps1 as i64 - after_hostile as i64
    );
    println!(
        "| after {} more random caps hashes | {after_caps2} | {} |",
        caps / 2,
        after_caps2 as i64 - after_caps1 as i64
    );
    Ok(())
}
