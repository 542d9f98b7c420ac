//! Routes each stanza addressed to the component to its handler and sends the answer.

use tracing::{debug, warn};

use crate::component::{Outbox, StanzaHandler};
use crate::jid::Jid;
use crate::xml::Element;

use super::disco;
use super::errors::StanzaError;
use super::stanza::{Iq, IqParseError, IqType};
use super::{NS_DISCO_INFO, NS_DISCO_ITEMS, NS_PING, NS_VERSION};

/// The component's stanza handler.
pub struct Service {
    domain: Jid,
}

impl Service {
    pub fn new(domain: &str) -> Result<Service, crate::jid::JidError> {
        Ok(Service {
            domain: Jid::parse(domain)?,
        })
    }

    async fn handle_iq(&self, stanza: Element, out: &Outbox) {
        let iq = match Iq::parse(stanza) {
            Ok(iq) => iq,
            Err(IqParseError::Ignore(why)) => {
                debug!("ignoring iq: {why}");
                return;
            }
            Err(IqParseError::Reply(iq, err)) => {
                let _ = out.send(&iq.error(&err)).await;
                return;
            }
        };
        if matches!(iq.kind, IqType::Result | IqType::Error) {
            // Answers to our own requests; errors are never answered (RFC 6120 8.3.1).
            return;
        }
        let reply = match self.answer(&iq) {
            Ok(payload) => iq.result(payload),
            Err(err) => iq.error(&err),
        };
        if out.send(&reply).await.is_err() {
            warn!("dropping the answer to iq {}: shutting down", iq.id);
        }
    }

    /// The payload of the result, or the error, for an IQ get/set to the component.
    fn answer(&self, iq: &Iq) -> Result<Option<Element>, StanzaError> {
        let to_us = iq.to.as_ref().is_some_and(|to| {
            to.node().is_none() && to.resource().is_none() && to.domain() == self.domain.domain()
        });
        if !to_us {
            // Not an entity we host (e.g. user@pubsub.example.org): RFC 6120 8.3.3.19.
            return Err(StanzaError::service_unavailable());
        }
        let payload = iq.payload.as_ref().ok_or_else(StanzaError::bad_request)?;
        let node = payload.get_attr("node");
        match (iq.kind, payload.name(), payload.ns()) {
            (IqType::Get, "query", NS_DISCO_INFO) => match node {
                None => Ok(Some(disco::info_query(
                    None,
                    &[("pubsub", "service", "stratus")],
                    &disco::service_features(),
                    Vec::new(),
                ))),
                Some(_) => Err(StanzaError::item_not_found()),
            },
            (IqType::Get, "query", NS_DISCO_ITEMS) => match node {
                None => Ok(Some(disco::items_query(None, Vec::new()))),
                Some(_) => Err(StanzaError::item_not_found()),
            },
            (IqType::Get, "ping", NS_PING) => Ok(None),
            (IqType::Get, "query", NS_VERSION) => Ok(Some(
                Element::new("query", NS_VERSION)
                    .child(Element::new("name", NS_VERSION).text("stratus"))
                    .child(Element::new("version", NS_VERSION).text(env!("CARGO_PKG_VERSION"))),
            )),
            _ => Err(StanzaError::service_unavailable()),
        }
    }
}

impl StanzaHandler for Service {
    async fn handle(&self, stanza: Element, out: &Outbox) {
        match stanza.name() {
            "iq" => self.handle_iq(stanza, out).await,
            // Messages and presences to the host service carry nothing we act on yet; errors are
            // never answered.
            other => debug!("ignoring {other} from {:?}", stanza.get_attr("from")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::component::NS_COMPONENT;
    use crate::xml::{Limits, parse_element};

    fn ask(xml: &str) -> Element {
        let svc = Service::new("pubsub.localhost").unwrap();
        let stanza = parse_element(
            &xml.replace("<iq ", &format!("<iq xmlns='{NS_COMPONENT}' ")),
            Limits::default(),
        )
        .unwrap();
        let iq = Iq::parse(stanza).map_err(|_| ()).unwrap();
        match svc.answer(&iq) {
            Ok(p) => iq.result(p),
            Err(e) => iq.error(&e),
        }
    }

    #[test]
    fn disco_info_names_the_pubsub_service() {
        let r = ask(
            "<iq type='get' id='1' from='a@localhost/r' to='pubsub.localhost'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>",
        );
        assert_eq!(r.get_attr("type"), Some("result"));
        assert_eq!(r.get_attr("to"), Some("a@localhost/r"));
        let q = r.get_child("query", NS_DISCO_INFO).unwrap();
        let id = q.get_child("identity", NS_DISCO_INFO).unwrap();
        assert_eq!(
            (id.get_attr("category"), id.get_attr("type")),
            (Some("pubsub"), Some("service"))
        );
    }

    #[test]
    fn unknown_iq_is_service_unavailable() {
        let r = ask(
            "<iq type='get' id='2' from='a@localhost/r' to='pubsub.localhost'><query xmlns='urn:unknown'/></iq>",
        );
        assert_eq!(r.get_attr("type"), Some("error"));
        let e = r.get_child("error", NS_COMPONENT).unwrap();
        assert!(
            e.get_child("service-unavailable", super::super::errors::NS_STANZAS)
                .is_some()
        );
    }
}
