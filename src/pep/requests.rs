//! IQs the component sends and waits for (roster gets, disco#info of caps): a table of waiters.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::component::Outbox;
use crate::xml::Element;

#[derive(Default)]
pub struct Requests {
    next: AtomicU64,
    waiting: Mutex<HashMap<String, oneshot::Sender<Element>>>,
}

impl Requests {
    /// Sends `iq` (an id is assigned) and waits up to `timeout` for the result or error.
    /// Must not be awaited by the task that reads the stream (the answer arrives there).
    pub async fn send(&self, out: &Outbox, mut iq: Element, timeout: Duration) -> Option<Element> {
        let id = format!("stratus-{}", self.next.fetch_add(1, Ordering::Relaxed));
        iq.set_attr("id", id.clone());
        let (tx, rx) = oneshot::channel();
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone(), tx);
        if out.send(&iq).await.is_err() {
            self.waiting
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return None;
        }
        let got = tokio::time::timeout(timeout, rx)
            .await
            .ok()
            .and_then(Result::ok);
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&id);
        got
    }

    /// Hands an incoming result/error to its waiter; false when nobody waits for this id.
    pub fn complete(&self, stanza: Element) -> Result<(), Element> {
        let Some(id) = stanza.get_attr("id") else {
            return Err(stanza);
        };
        let waiter = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        match waiter {
            Some(tx) => {
                let _ = tx.send(stanza);
                Ok(())
            }
            None => Err(stanza),
        }
    }
}
