//! The outbound queue: producers serialize stanzas and queue them; one writer task per connection
//! drains the queue into the socket in batches.
//!
//! The queue is bounded in stanzas and in bytes, so a slow server makes producers wait instead of
//! growing memory without limit. It outlives connections: stanzas queued while the component
//! reconnects are written on the next connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, MutexGuard, Semaphore, mpsc, oneshot};

use super::flow::Flow;
use crate::xml::Element;

/// Bytes a writer gathers before one write call.
const BATCH_BYTES: usize = 64 * 1024;

/// Urgent stanzas (our own requests, each a small IQ) queued at most: as many as requests may
/// wait for answers at once (`Requests`' default capacity).
const URGENT_CAPACITY: usize = 4096;

/// Bytes queued at most unless configured: producers wait beyond.
pub const DEFAULT_QUEUE_BYTES: usize = 64 << 20;

tokio::task_local! {
    /// Set while the task that reads the stream handles a stanza ([`as_reader`]).
    static READER: ();
}

/// Runs `f` as the stream's reader: when a send in it finds the queue full, the writer writes
/// past a full window ([`Flow`]) rather than wait for a ping answer that only this reader can read.
pub async fn as_reader<F: std::future::Future>(f: F) -> F::Output {
    READER.scope((), f).await
}

/// Readers waiting for room in the queue, and a wake-up for the writer when one begins to.
#[derive(Default)]
struct Stuck {
    readers: AtomicUsize,
    begun: tokio::sync::Notify,
}

/// Counts the reader as waiting for as long as it lives (a cancelled send included).
struct ReaderWaits<'a>(&'a Stuck);

impl<'a> ReaderWaits<'a> {
    fn begin(stuck: &'a Stuck) -> Option<ReaderWaits<'a>> {
        READER.try_with(|_| ()).ok()?;
        stuck.readers.fetch_add(1, Ordering::SeqCst);
        stuck.begun.notify_one();
        Some(ReaderWaits(stuck))
    }
}

impl Drop for ReaderWaits<'_> {
    fn drop(&mut self) {
        self.0.readers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The sending side: cheap to clone, shared by every producer.
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<String>,
    /// Our own questions to the server (roster reads, disco): written before anything queued
    /// in `tx`, so that an answer a decision waits for is not behind a backlog of deliveries.
    urgent: mpsc::Sender<String>,
    /// The default namespace of the stream the stanzas go to (jabber:component:accept, jabber:client).
    stream_ns: &'static str,
    /// One permit per queued byte (a string larger than the whole budget takes all of it).
    bytes: Arc<Semaphore>,
    max_bytes: usize,
    stuck: Arc<Stuck>,
}

/// The receiving side, handed from one connection's writer to the next.
#[derive(Clone)]
pub struct OutboxReceiver {
    rx: Arc<Mutex<mpsc::Receiver<String>>>,
    urgent: Arc<Mutex<mpsc::Receiver<String>>>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
    stuck: Arc<Stuck>,
}

impl OutboxReceiver {
    /// The queue, for one reader at a time.
    pub async fn lock(&self) -> MutexGuard<'_, mpsc::Receiver<String>> {
        self.rx.lock().await
    }

    /// The queue of urgent stanzas ([`Outbox::send_urgent`]), for one reader at a time.
    pub async fn lock_urgent(&self) -> MutexGuard<'_, mpsc::Receiver<String>> {
        self.urgent.lock().await
    }

    /// Gives back the byte budget of a string taken from the queue.
    fn release(&self, xml: &str) {
        self.bytes.add_permits(xml.len().min(self.max_bytes));
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the outbound queue is closed (shutting down)")]
pub struct OutboxClosed;

impl Outbox {
    pub fn new(capacity: usize, stream_ns: &'static str) -> (Outbox, OutboxReceiver) {
        Outbox::with_bytes(capacity, DEFAULT_QUEUE_BYTES, stream_ns)
    }

    /// A queue of at most `capacity` strings and `max_bytes` bytes.
    pub fn with_bytes(
        capacity: usize,
        max_bytes: usize,
        stream_ns: &'static str,
    ) -> (Outbox, OutboxReceiver) {
        let (tx, rx) = mpsc::channel(capacity);
        let (urgent, urgent_rx) = mpsc::channel(URGENT_CAPACITY);
        // Permits are taken in u32 amounts: the budget is capped there so that what is taken and
        // what is given back are always the same number.
        let max_bytes = max_bytes.min(u32::MAX as usize);
        let bytes = Arc::new(Semaphore::new(max_bytes));
        let stuck = Arc::new(Stuck::default());
        (
            Outbox {
                tx,
                urgent,
                stream_ns,
                bytes: bytes.clone(),
                max_bytes,
                stuck: stuck.clone(),
            },
            OutboxReceiver {
                rx: Arc::new(Mutex::new(rx)),
                urgent: Arc::new(Mutex::new(urgent_rx)),
                bytes,
                max_bytes,
                stuck,
            },
        )
    }

    /// Serializes the stanza and queues it; waits while the queue is full.
    pub async fn send(&self, stanza: &Element) -> Result<(), OutboxClosed> {
        crate::metrics::metrics().stanzas_out.inc();
        let mut xml = String::with_capacity(256);
        stanza.write_to(&mut xml, self.stream_ns);
        self.send_raw(xml).await
    }

    /// Queues a request of ours ahead of everything in the ordinary queue (its order among
    /// other urgent stanzas is kept); waits while [`URGENT_CAPACITY`] are queued.
    pub async fn send_urgent(&self, stanza: &Element) -> Result<(), OutboxClosed> {
        crate::metrics::metrics().stanzas_out.inc();
        let mut xml = String::with_capacity(256);
        stanza.write_to(&mut xml, self.stream_ns);
        self.urgent.send(xml).await.map_err(|_| OutboxClosed)
    }

    /// Queues already-serialized XML (one or more complete stanzas); waits while the queue is
    /// full in stanzas or in bytes.
    pub async fn send_raw(&self, xml: String) -> Result<(), OutboxClosed> {
        let n = xml.len().min(self.max_bytes);
        let permits = n as u32; // n <= max_bytes <= u32::MAX
        match self.bytes.try_acquire_many(permits) {
            Ok(p) => p.forget(),
            Err(tokio::sync::TryAcquireError::Closed) => return Err(OutboxClosed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                let _waits = ReaderWaits::begin(&self.stuck);
                match self.bytes.acquire_many(permits).await {
                    Ok(p) => p.forget(),
                    Err(_) => return Err(OutboxClosed),
                }
            }
        }
        let sent = match self.tx.try_send(xml) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(OutboxClosed),
            Err(mpsc::error::TrySendError::Full(xml)) => {
                let _waits = ReaderWaits::begin(&self.stuck);
                self.tx.send(xml).await.map_err(|_| OutboxClosed)
            }
        };
        if sent.is_err() {
            self.bytes.add_permits(n);
        }
        sent
    }

    /// Bytes queued now.
    pub fn queued_bytes(&self) -> usize {
        self.max_bytes - self.bytes.available_permits()
    }

    pub fn stream_ns(&self) -> &'static str {
        self.stream_ns
    }

    /// Stanzas waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// How a writer should end.
#[derive(Debug)]
pub enum WriterStop {
    /// Write everything already queued, then these bytes (e.g. `</stream:stream>`), then shut down.
    Drain(String),
    /// Write these bytes (e.g. a stream error) without draining, then shut down.
    Abort(String),
}

/// Runs the writer of one connection until the socket fails or `stop` fires.
/// Writes a single space after `keepalive` of silence. With a `flow` window, the ordinary queue
/// waits while the server has not handled a window's worth of what was written ([`Flow`]); urgent
/// stanzas do not.
pub async fn run_writer<W: AsyncWrite + Unpin>(
    mut io: W,
    queue: OutboxReceiver,
    keepalive: Option<Duration>,
    flow: Option<Arc<Flow>>,
    mut stop: oneshot::Receiver<WriterStop>,
) -> std::io::Result<()> {
    let mut rx = queue.rx.lock().await;
    let mut urgent = queue.urgent.lock().await;
    let mut buf = String::with_capacity(BATCH_BYTES);
    let idle = keepalive.unwrap_or(Duration::from_secs(24 * 3600));
    // Bytes written on this connection.
    let mut written = 0u64;
    let mut was_open = true;
    loop {
        // The reader waiting for room: what it would send must not wait behind the window, as the
        // ping answers that open the window are read only by it.
        let open = flow.as_ref().is_none_or(|f| f.open(written))
            || queue.stuck.readers.load(Ordering::SeqCst) > 0;
        if was_open && !open {
            crate::metrics::metrics().window_full.inc();
        }
        was_open = open;
        tokio::select! {
            biased;
            how = &mut stop => {
                let tail = match how {
                    Ok(WriterStop::Drain(tail)) => {
                        while let Ok(more) = urgent.try_recv() {
                            buf.push_str(&more);
                        }
                        while let Ok(more) = rx.try_recv() {
                            queue.release(&more);
                            buf.push_str(&more);
                            if buf.len() >= BATCH_BYTES {
                                io.write_all(buf.as_bytes()).await?;
                                buf.clear();
                            }
                        }
                        tail
                    }
                    Ok(WriterStop::Abort(tail)) => tail,
                    Err(_) => String::new(),
                };
                buf.push_str(&tail);
                io.write_all(buf.as_bytes()).await?;
                io.flush().await?;
                let _ = io.shutdown().await;
                return Ok(());
            }
            Some(first) = urgent.recv() => {
                buf.push_str(&first);
                while let Ok(more) = urgent.try_recv() {
                    buf.push_str(&more);
                }
                written += write_batch(&mut io, &mut buf).await?;
            }
            msg = rx.recv(), if open => {
                let Some(first) = msg else {
                    // Every producer is gone: nothing more will be queued.
                    io.flush().await?;
                    return Ok(());
                };
                queue.release(&first);
                buf.push_str(&first);
                while buf.len() < BATCH_BYTES {
                    match rx.try_recv() {
                        Ok(more) => {
                            queue.release(&more);
                            buf.push_str(&more);
                        }
                        Err(_) => break,
                    }
                }
                if let Some(ping) = flow.as_ref().and_then(|f| f.probe(written + buf.len() as u64)) {
                    ping.write_to(&mut buf, crate::component::NS_COMPONENT);
                }
                written += write_batch(&mut io, &mut buf).await?;
            }
            _ = async { if let Some(f) = &flow { f.wait().await } }, if !open => {}
            _ = queue.stuck.begun.notified(), if !open => {}
            _ = tokio::time::sleep(idle), if keepalive.is_some() => {
                io.write_all(b" ").await?;
                io.flush().await?;
            }
        }
    }
}

/// Writes and flushes one batch, counted in the stream metrics, and empties `buf`; its length.
async fn write_batch<W: AsyncWrite + Unpin>(io: &mut W, buf: &mut String) -> std::io::Result<u64> {
    tracing::trace!("sent {buf}");
    io.write_all(buf.as_bytes()).await?;
    io.flush().await?;
    let m = crate::metrics::metrics();
    m.bytes_out.inc_by(buf.len() as u64);
    m.stream_writes.inc();
    let n = buf.len() as u64;
    buf.clear();
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn writes_queued_stanzas_and_drains_on_stop() {
        let (outbox, rx) = Outbox::new(4, "jabber:component:accept");
        let (w, mut r) = tokio::io::duplex(1 << 16);
        let (stop_tx, stop_rx) = oneshot::channel();
        let writer = tokio::spawn(run_writer(w, rx, None, None, stop_rx));
        outbox
            .send(&Element::new("message", "jabber:component:accept").attr("to", "a@b"))
            .await
            .unwrap();
        outbox.send_raw("<presence/>".into()).await.unwrap();
        stop_tx
            .send(WriterStop::Drain("</stream:stream>".into()))
            .unwrap();
        writer.await.unwrap().unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "<message to='a@b'/><presence/></stream:stream>");
    }

    /// A request of ours queued after a backlog is written before it: the answer a decision
    /// waits for does not queue behind the deliveries.
    #[tokio::test]
    async fn urgent_stanzas_go_before_the_backlog() {
        let (outbox, rx) = Outbox::new(16, "jabber:component:accept");
        for i in 0..3 {
            outbox
                .send_raw(format!("<message id='{i}'/>"))
                .await
                .unwrap();
        }
        outbox
            .send_urgent(&Element::new("iq", "jabber:component:accept").attr("id", "q"))
            .await
            .unwrap();
        let (w, mut r) = tokio::io::duplex(1 << 16);
        let (stop_tx, stop_rx) = oneshot::channel();
        let writer = tokio::spawn(run_writer(w, rx, None, None, stop_rx));
        let mut first = [0u8; 12];
        r.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"<iq id='q'/>");
        stop_tx.send(WriterStop::Drain(String::new())).unwrap();
        writer.await.unwrap().unwrap();
        let mut rest = String::new();
        r.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "<message id='0'/><message id='1'/><message id='2'/>");
    }

    /// Reads from the stream until `end` has been read; what was read.
    async fn read_through(r: &mut tokio::io::DuplexStream, end: &str) -> String {
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains(end) {
            let mut b = [0u8; 1];
            r.read_exact(&mut b).await.unwrap();
            got.push(b[0]);
        }
        String::from_utf8(got).unwrap()
    }

    /// With a window, the ordinary queue waits once a window's worth is unanswered by the
    /// server, while our own questions still go; the server's answer to the ping releases it.
    #[tokio::test]
    async fn a_full_window_holds_deliveries_until_the_server_answers_its_ping() {
        let (outbox, rx) = Outbox::new(16, "jabber:component:accept");
        let flow = Arc::new(Flow::new(1000, "pubsub.example.org", "example.org"));
        let (w, mut r) = tokio::io::duplex(1 << 16);
        let (stop_tx, stop_rx) = oneshot::channel();
        let writer = tokio::spawn(run_writer(w, rx, None, Some(flow.clone()), stop_rx));
        let big = format!("<message id='a'>{}</message>", "x".repeat(1200));
        outbox.send_raw(big.clone()).await.unwrap();
        let first = read_through(&mut r, "</iq>").await;
        let ping = first
            .strip_prefix(big.as_str())
            .expect("the delivery, then the ping");
        let ping = crate::xml::parse_element(
            &ping.replace("<iq ", "<iq xmlns='jabber:component:accept' "),
            crate::xml::Limits::default(),
        )
        .unwrap();
        assert_eq!(ping.get_attr("to"), Some("example.org"));
        // 1,200 bytes unanswered, over the window of 1,000: this delivery waits...
        outbox.send_raw("<message id='b'/>".into()).await.unwrap();
        // (the writer, woken by it, runs on this one thread before the question is queued: without
        // the window it would write the delivery now)
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        // ...and a question of ours does not.
        outbox
            .send_urgent(&Element::new("iq", "jabber:component:accept").attr("id", "q"))
            .await
            .unwrap();
        assert_eq!(read_through(&mut r, "/>").await, "<iq id='q'/>");
        let answer = Element::new("iq", "jabber:component:accept")
            .attr("type", "result")
            .attr("id", ping.get_attr("id").unwrap().to_owned())
            .attr("from", "example.org");
        assert!(flow.answer(&answer));
        assert_eq!(read_through(&mut r, "/>").await, "<message id='b'/>");
        stop_tx.send(WriterStop::Drain(String::new())).unwrap();
        writer.await.unwrap().unwrap();
    }

    /// The reader waiting for room in a full queue makes the writer write past a full window:
    /// the ping answers that open it arrive on the stream only this reader reads.
    #[tokio::test(start_paused = true)]
    async fn the_reader_never_waits_behind_a_full_window() {
        let (outbox, rx) = Outbox::new(1, "jabber:component:accept");
        let flow = Arc::new(Flow::new(1000, "pubsub.example.org", "example.org"));
        let (w, mut r) = tokio::io::duplex(1 << 16);
        let (_stop, stop_rx) = oneshot::channel();
        tokio::spawn(run_writer(w, rx, None, Some(flow.clone()), stop_rx));
        let big = format!("<message id='a'>{}</message>", "x".repeat(1200));
        outbox.send_raw(big).await.unwrap();
        read_through(&mut r, "</iq>").await;
        // The window is full; this fills the queue of one.
        outbox.send_raw("<message id='b'/>".into()).await.unwrap();
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert_eq!(outbox.queued(), 1, "held by the window");
        // The reader's answer (say to a ping of the server's) finds the queue full.
        as_reader(outbox.send_raw("<iq id='r'/>".into()))
            .await
            .unwrap();
        assert!(
            !flow.is_off(),
            "written past the window, not after its ping timed out"
        );
        assert_eq!(read_through(&mut r, "/>").await, "<message id='b'/>");
    }

    #[tokio::test(start_paused = true)]
    async fn keepalive_after_silence() {
        let (_outbox, rx) = Outbox::new(4, "jabber:component:accept");
        let (w, mut r) = tokio::io::duplex(1 << 16);
        let (_stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(run_writer(
            w,
            rx,
            Some(Duration::from_secs(30)),
            None,
            stop_rx,
        ));
        let mut b = [0u8; 1];
        r.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b" ");
    }

    #[tokio::test]
    async fn the_queue_is_bounded_in_bytes() {
        let (outbox, rx) = Outbox::with_bytes(100, 10, "jabber:client");
        outbox.send_raw("123456".into()).await.unwrap();
        assert_eq!(outbox.queued_bytes(), 6);
        let more =
            tokio::time::timeout(Duration::from_millis(50), outbox.send_raw("78901".into())).await;
        assert!(more.is_err(), "11 bytes do not fit in 10");
        // The writer takes the first string: its bytes are free again.
        let (w, _r) = tokio::io::duplex(1 << 16);
        let (_stop, stop_rx) = oneshot::channel();
        tokio::spawn(run_writer(w, rx, None, None, stop_rx));
        outbox.send_raw("78901".into()).await.unwrap();
    }

    #[tokio::test]
    async fn full_queue_makes_producers_wait() {
        let (outbox, _rx) = Outbox::new(2, "jabber:client");
        outbox.send_raw("a".into()).await.unwrap();
        outbox.send_raw("b".into()).await.unwrap();
        assert_eq!(outbox.queued(), 2);
        let third =
            tokio::time::timeout(Duration::from_millis(50), outbox.send_raw("c".into())).await;
        assert!(third.is_err(), "a full queue must apply back-pressure");
    }
}
