//! Flow control on the component stream: at most a window of bytes written that the server has
//! not handled yet.
//!
//! A server may read a stream far ahead of what it handles: ejabberd parses each chunk it reads
//! into its process's mailbox and reads on, so TCP's back-pressure never reaches stratus and all
//! it writes waits inside the server. A question stratus then asks (the roster read an access
//! decision waits on) queues behind all of it: in a login storm through ejabberd, roster reads
//! went unanswered for 30 s behind hundreds of thousands of last items, and their deliveries were
//! refused.
//!
//! So the writer pings the server after every quarter of the window and writes its ordinary
//! queue only while less than the window was written since the last answered ping. RFC 6120 10.1
//! (in-order processing): the server handles a stream's stanzas in the order sent, so the answer
//! to a ping, result or error, says that everything before it was handled. Our own questions
//! (the urgent lane) are written even when the window is full; each is one small IQ.
//!
//! Only the server's domain can answer a ping: the id is 128 random bits and the answer must
//! come from the address asked (RFC 6120 8.1.3), as for every request. A server that does not
//! answer a ping within [`PROBE_TIMEOUT`] is written to without a window for the rest of the
//! connection, with a warning, rather than stalling the stream.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::jid::Jid;
use crate::xml::Element;

/// The window unless configured (`[component] in_flight_bytes`): about 2,000 notifications, a
/// tenth of a second of ejabberd's parsing on two cores.
pub const DEFAULT_WINDOW: u64 = 1 << 20;

/// A ping unanswered this long turns the window off for the connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

/// Pings per window: the writer waits only when the server is this many pings behind.
const PROBES_PER_WINDOW: u64 = 4;

struct State {
    /// Pings written and not answered, oldest first: id, bytes written up to and including it,
    /// when it was written.
    pending: VecDeque<(String, u64, Instant)>,
    /// Bytes the server has handled (as of its last answer).
    handled: u64,
    /// Bytes written when the last ping was.
    probed: u64,
    /// No window any more (a ping went unanswered).
    off: bool,
}

/// The window of one connection, shared by its writer and its reader.
pub struct Flow {
    window: u64,
    step: u64,
    from: String,
    to: String,
    server: Option<Jid>,
    state: Mutex<State>,
    answered: Notify,
}

impl Flow {
    /// At most `window` bytes unhandled by `server` (its domain), pinged from `from`.
    pub fn new(window: u64, from: &str, server: &str) -> Flow {
        Flow {
            window,
            step: (window / PROBES_PER_WINDOW).max(1),
            from: from.to_owned(),
            to: server.to_owned(),
            server: Jid::parse(server).ok(),
            state: Mutex::new(State {
                pending: VecDeque::new(),
                handled: 0,
                probed: 0,
                off: false,
            }),
            answered: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the writer may write more of its ordinary queue, `written` bytes into the
    /// connection.
    pub fn open(&self, written: u64) -> bool {
        let st = self.state();
        st.off || written.saturating_sub(st.handled) < self.window
    }

    /// Whether the window was turned off (a ping went unanswered for [`PROBE_TIMEOUT`]).
    pub fn is_off(&self) -> bool {
        self.state().off
    }

    /// The ping to write after `written` bytes, when one is due.
    pub fn probe(&self, written: u64) -> Option<Element> {
        let mut st = self.state();
        if st.off || written.saturating_sub(st.probed) < self.step {
            return None;
        }
        let id = format!("f-{:032x}", rand::random::<u128>());
        // The ping itself is written with the batch it follows: counted up to the batch's end.
        st.probed = written;
        st.pending.push_back((id.clone(), written, Instant::now()));
        crate::metrics::metrics().window_pings.inc();
        Some(
            Element::new("iq", super::NS_COMPONENT)
                .attr("type", "get")
                .attr("id", id)
                .attr("from", self.from.clone())
                .attr("to", self.to.clone())
                .child(Element::new("ping", crate::xmpp::NS_PING)),
        )
    }

    /// Takes an IQ result or error from the stream: true when it answers one of our pings (and
    /// then nothing else must see it). Answers from anyone but the server are not ours.
    pub fn answer(&self, iq: &Element) -> bool {
        let Some(id) = iq.get_attr("id").filter(|id| id.starts_with("f-")) else {
            return false;
        };
        let mut st = self.state();
        let Some(k) = st.pending.iter().position(|(p, _, _)| p == id) else {
            return false;
        };
        let from = iq.get_attr("from").and_then(|f| Jid::parse(f).ok());
        if from.is_none() || from != self.server {
            debug!("ignoring an answer to our ping {id} from {from:?}, not the server");
            return true;
        }
        // In order: the pings before it were handled too, whether or not their answers came.
        let (_, mark, _) = st.pending.drain(..=k).next_back().expect("k is in range");
        crate::metrics::metrics()
            .window_answered
            .inc_by(k as u64 + 1);
        st.handled = st.handled.max(mark);
        drop(st);
        self.answered.notify_one();
        true
    }

    /// Waits until a ping is answered, or until the oldest unanswered one is [`PROBE_TIMEOUT`]
    /// old (then the window is off for good). For a writer whose window is full.
    pub async fn wait(&self) {
        let oldest = self.state().pending.front().map(|(_, _, at)| *at);
        let deadline = oldest.unwrap_or_else(Instant::now) + PROBE_TIMEOUT;
        let answered = self.answered.notified();
        if tokio::time::timeout_at(deadline, answered).await.is_err() {
            let mut st = self.state();
            if st
                .pending
                .front()
                .is_some_and(|(_, _, at)| at.elapsed() >= PROBE_TIMEOUT)
            {
                st.off = true;
                crate::metrics::metrics().window_off.inc();
                warn!(
                    "the server {} did not answer a ping within {PROBE_TIMEOUT:?}: writing \
                     without a window on this connection (our questions may wait behind a \
                     backlog inside the server)",
                    self.to
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(to: &Element, from: &str) -> Element {
        Element::new("iq", super::super::NS_COMPONENT)
            .attr("type", "result")
            .attr("id", to.get_attr("id").unwrap().to_owned())
            .attr("from", from.to_owned())
    }

    #[test]
    fn closes_at_the_window_and_opens_on_the_servers_answer() {
        let f = Flow::new(1000, "pubsub.example.org", "example.org");
        assert!(f.probe(100).is_none(), "not a quarter of the window yet");
        let p1 = f.probe(300).expect("a ping after a quarter");
        assert_eq!(p1.get_attr("to"), Some("example.org"));
        assert_eq!(p1.get_attr("from"), Some("pubsub.example.org"));
        assert!(p1.get_child("ping", crate::xmpp::NS_PING).is_some());
        assert!(f.probe(400).is_none());
        let p2 = f.probe(700).unwrap();
        assert!(f.open(999));
        assert!(!f.open(1000), "a window's worth unhandled");
        // The answer to the second ping covers the first too (in-order processing).
        assert!(f.answer(&answer(&p2, "example.org")));
        assert!(f.open(1000));
        assert!(f.open(1699), "300 bytes unhandled");
        assert!(!f.open(1700));
        // Its late answer is ours (consumed) but says nothing new.
        assert!(!f.answer(&answer(&p1, "example.org")), "no longer pending");
    }

    #[test]
    fn only_the_server_answers_for_the_server() {
        let f = Flow::new(1000, "pubsub.example.org", "example.org");
        let p = f.probe(1000).unwrap();
        assert!(!f.open(1000));
        // Someone on the server who learnt the id: consumed, but the window stays closed.
        assert!(f.answer(&answer(&p, "mallory@example.org")));
        assert!(!f.open(1000));
        // Another request's answer is not ours.
        let other = Element::new("iq", super::super::NS_COMPONENT)
            .attr("type", "result")
            .attr("id", "s-1")
            .attr("from", "example.org");
        assert!(!f.answer(&other));
        // An error is an answer: the server handled what came before it.
        let err = answer(&p, "EXAMPLE.org").attr("type", "error");
        assert!(f.answer(&err));
        assert!(f.open(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_ping_turns_the_window_off() {
        let f = Flow::new(1000, "pubsub.example.org", "example.org");
        f.probe(1000).unwrap();
        assert!(!f.open(1000));
        f.wait().await;
        assert!(f.is_off());
        assert!(f.open(5000), "off after {PROBE_TIMEOUT:?}");
        assert!(f.probe(100_000).is_none(), "no more pings once off");
    }
}
