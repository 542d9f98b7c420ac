//! The demo client: registers two users, creates a node on stratus, subscribes one user, publishes
//! with the other, and prints the event as received.
//!
//!   cargo run --example demo -- C2S_HOST:PORT PUBSUB_DOMAIN

use std::time::Duration;

use stratus::client::{Client, ClientConfig, NS_CLIENT};
use stratus::xml::Element;

const PS: &str = "http://jabber.org/protocol/pubsub";
const EVENT: &str = "http://jabber.org/protocol/pubsub#event";

async fn user(addr: &str, name: &str) -> Result<Client, Box<dyn std::error::Error>> {
    // Registration fails harmlessly when the account exists from an earlier run.
    let _ = Client::register(addr, "localhost", name, "demo-pass").await;
    Ok(Client::connect(&ClientConfig {
        addr: addr.into(),
        domain: "localhost".into(),
        username: name.into(),
        password: "demo-pass".into(),
        resource: "demo".into(),
        ..ClientConfig::default()
    })
    .await?)
}

fn iq(kind: &str, to: &str, payload: Element) -> Element {
    Element::new("iq", NS_CLIENT)
        .attr("type", kind)
        .attr("to", to)
        .child(payload)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let addr = args.get(1).map(String::as_str).unwrap_or("127.0.0.1:5222");
    let svc = args
        .get(2)
        .map(String::as_str)
        .unwrap_or("pubsub.localhost");
    let mut alice = user(addr, "alice").await?;
    let mut bob = user(addr, "bob").await?;
    println!("logged in as {} and {}", alice.jid(), bob.jid());

    let info = alice
        .iq(iq(
            "get",
            svc,
            Element::new("query", "http://jabber.org/protocol/disco#info"),
        ))
        .await?;
    println!("disco#info of {svc}:\n  {info}");
    let create = alice
        .iq(iq(
            "set",
            svc,
            Element::new("pubsub", PS).child(Element::new("create", PS).attr("node", "demo")),
        ))
        .await?;
    match create.get_attr("type") {
        Some("result") => println!("created node 'demo'"),
        _ if create.to_string().contains("conflict") => {
            println!("node 'demo' exists (kept in the store from an earlier run)")
        }
        _ => println!("create node 'demo' failed: {create}"),
    }
    let bob_jid = bob.jid().to_string();
    let sub = bob
        .iq(iq(
            "set",
            svc,
            Element::new("pubsub", PS).child(
                Element::new("subscribe", PS)
                    .attr("node", "demo")
                    .attr("jid", bob_jid),
            ),
        ))
        .await?;
    println!("bob subscribes: {sub}");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let publish = Element::new("pubsub", PS).child(
        Element::new("publish", PS).attr("node", "demo").child(
            Element::new("item", PS).child(
                Element::new("entry", "http://www.w3.org/2005/Atom").child(
                    Element::new("title", "http://www.w3.org/2005/Atom")
                        .text(format!("Hello from stratus at {stamp}")),
                ),
            ),
        ),
    );
    let started = std::time::Instant::now();
    let ack = alice.iq(iq("set", svc, publish)).await?;
    println!("alice publishes: {ack}");
    let event = bob
        .wait_for(Duration::from_secs(10), |m| {
            m.get_child("event", EVENT)
                .and_then(|e| e.get_child("items", EVENT))
                .and_then(|i| i.children().last())
                .is_some_and(|item| item.to_string().contains(&stamp.to_string()))
        })
        .await?;
    println!("bob receives after {:?}:\n  {event}", started.elapsed());
    alice.close().await;
    bob.close().await;
    Ok(())
}
