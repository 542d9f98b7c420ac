//! The outbound queue: producers serialize stanzas and queue them; one writer task per connection
//! drains the queue into the socket in batches.
//!
//! The queue is bounded in stanzas and in bytes, so a slow server makes producers wait instead of
//! growing memory without limit. It outlives connections: stanzas queued while the component
//! reconnects are written on the next connection.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{Mutex, MutexGuard, Semaphore, mpsc, oneshot};

use crate::xml::Element;

/// Bytes a writer gathers before one write call.
const BATCH_BYTES: usize = 64 * 1024;

/// Urgent stanzas (our own requests, each a small IQ) queued at most: as many as requests may
/// wait for answers at once (`Requests`' default capacity).
const URGENT_CAPACITY: usize = 4096;

/// Bytes queued at most unless configured: producers wait beyond.
pub const DEFAULT_QUEUE_BYTES: usize = 64 << 20;

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
}

/// The receiving side, handed from one connection's writer to the next.
#[derive(Clone)]
pub struct OutboxReceiver {
    rx: Arc<Mutex<mpsc::Receiver<String>>>,
    urgent: Arc<Mutex<mpsc::Receiver<String>>>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
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
        (
            Outbox {
                tx,
                urgent,
                stream_ns,
                bytes: bytes.clone(),
                max_bytes,
            },
            OutboxReceiver {
                rx: Arc::new(Mutex::new(rx)),
                urgent: Arc::new(Mutex::new(urgent_rx)),
                bytes,
                max_bytes,
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
        match self.bytes.acquire_many(permits).await {
            Ok(p) => p.forget(),
            Err(_) => return Err(OutboxClosed),
        }
        if self.tx.send(xml).await.is_err() {
            self.bytes.add_permits(n);
            return Err(OutboxClosed);
        }
        Ok(())
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
/// Writes a single space after `keepalive` of silence.
pub async fn run_writer<W: AsyncWrite + Unpin>(
    mut io: W,
    queue: OutboxReceiver,
    keepalive: Option<Duration>,
    mut stop: oneshot::Receiver<WriterStop>,
) -> std::io::Result<()> {
    let mut rx = queue.rx.lock().await;
    let mut urgent = queue.urgent.lock().await;
    let mut buf = String::with_capacity(BATCH_BYTES);
    let idle = keepalive.unwrap_or(Duration::from_secs(24 * 3600));
    loop {
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
                write_batch(&mut io, &mut buf).await?;
            }
            msg = rx.recv() => {
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
                write_batch(&mut io, &mut buf).await?;
            }
            _ = tokio::time::sleep(idle), if keepalive.is_some() => {
                io.write_all(b" ").await?;
                io.flush().await?;
            }
        }
    }
}

/// Writes and flushes one batch, counted in the stream metrics, and empties `buf`.
async fn write_batch<W: AsyncWrite + Unpin>(io: &mut W, buf: &mut String) -> std::io::Result<()> {
    tracing::trace!("sent {buf}");
    io.write_all(buf.as_bytes()).await?;
    io.flush().await?;
    let m = crate::metrics::metrics();
    m.bytes_out.inc_by(buf.len() as u64);
    m.stream_writes.inc();
    buf.clear();
    Ok(())
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
        let writer = tokio::spawn(run_writer(w, rx, None, stop_rx));
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
        let writer = tokio::spawn(run_writer(w, rx, None, stop_rx));
        let mut first = [0u8; 12];
        r.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"<iq id='q'/>");
        stop_tx.send(WriterStop::Drain(String::new())).unwrap();
        writer.await.unwrap().unwrap();
        let mut rest = String::new();
        r.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "<message id='0'/><message id='1'/><message id='2'/>");
    }

    #[tokio::test(start_paused = true)]
    async fn keepalive_after_silence() {
        let (_outbox, rx) = Outbox::new(4, "jabber:component:accept");
        let (w, mut r) = tokio::io::duplex(1 << 16);
        let (_stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(run_writer(w, rx, Some(Duration::from_secs(30)), stop_rx));
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
        tokio::spawn(run_writer(w, rx, None, stop_rx));
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
