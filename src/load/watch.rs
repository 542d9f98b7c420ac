//! What a load run reads of the processes it watches, beside its own clients: their CPU time
//! and resident memory (`--cpu-pid`, Linux `/proc`), and stratus's metrics (`--metrics`): the
//! outbound queue every second, the stream counters around the run.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::client::ClientError;

use super::LoadConfig;

/// One second of a run: resident memory of each watched process, and stratus's outbound queue.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Sample {
    pub second: u64,
    /// KiB, in the order of `cpu_pids` (None: the process could not be read).
    pub rss_kib: Vec<Option<u64>>,
    /// Stanzas waiting to be written to the server (`stratus_outbound_queue_stanzas`).
    pub outbound_queue: Option<u64>,
}

/// Resident memory of a local process in KiB (Linux: VmRSS of /proc/PID/status).
pub fn process_rss_kib(pid: u32) -> std::io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no VmRSS"))
}

/// `GET /metrics` from stratus's listener, the text as served.
pub(crate) async fn scrape(addr: &str) -> Result<String, ClientError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fail = |e: std::io::Error| ClientError::Protocol(format!("metrics at {addr}: {e}"));
    let mut s = tokio::net::TcpStream::connect(addr).await.map_err(fail)?;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .map_err(fail)?;
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut text))
        .await
        .map_err(|_| ClientError::Timeout(format!("metrics at {addr}")))?
        .map_err(fail)?;
    Ok(text)
}

/// The value of an unlabelled metric line `NAME VALUE`.
fn metric_value(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Samples the watched processes and the outbound queue once a second until `stop`.
pub(super) fn sampler(
    cfg: &LoadConfig,
    started: Instant,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Sample>> {
    let pids: Vec<u32> = cfg.cpu_pids.iter().map(|(_, p)| *p).collect();
    let metrics = cfg.metrics.clone();
    tokio::spawn(async move {
        let mut out = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            let outbound_queue = match &metrics {
                Some(m) => scrape(m)
                    .await
                    .ok()
                    .and_then(|t| metric_value(&t, "stratus_outbound_queue_stanzas"))
                    .map(|v| v as u64),
                None => None,
            };
            out.push(Sample {
                second: started.elapsed().as_secs(),
                rss_kib: pids.iter().map(|p| process_rss_kib(*p).ok()).collect(),
                outbound_queue,
            });
        }
        out
    })
}

/// Clock ticks per second of /proc's CPU times: USER_HZ, 100 on Linux whatever the kernel's HZ.
const USER_HZ: u64 = 100;

/// CPU time (user + system) of a local process so far, all its threads, those that ended
/// included (Linux: /proc/PID/stat; 10 ms resolution). Threads come and go in a run (a runtime's
/// blocking pool), so summing the live ones' times would lose theirs.
pub fn process_cpu(pid: u32) -> std::io::Result<Duration> {
    cpu_in_stat(&format!("/proc/{pid}/stat"))
}

/// utime + stime of a /proc `stat` file (a process's, or a thread's: `/proc/thread-self/stat`).
pub(crate) fn cpu_in_stat(path: &str) -> std::io::Result<Duration> {
    let text = std::fs::read_to_string(path)?;
    // Fields after the command name, which is in parentheses and may hold spaces: utime and
    // stime are the 14th and 15th fields of the line, the 12th and 13th after the name.
    let ticks = text.rsplit_once(')').and_then(|(_, rest)| {
        let mut times = rest
            .split_whitespace()
            .skip(11)
            .map(|v| v.parse::<u64>().ok());
        Some(times.next()?? + times.next()??)
    });
    let Some(ticks) = ticks else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected {path}: {text:?}"),
        ));
    };
    Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// What a run measured of the processes it watched, from the first publish to the last
/// notification.
pub(crate) struct Measured {
    /// CPU time of each `--cpu-pid` process.
    pub cpu: Vec<Duration>,
    /// stratus's stream counters (`--metrics`).
    pub stream: Option<StreamCounters>,
    pub samples: Vec<Sample>,
}

/// stratus's component-stream counters (`--metrics`): what the server received from it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StreamCounters {
    pub bytes: f64,
    pub stanzas: f64,
    pub writes: f64,
}

impl StreamCounters {
    /// From a `/metrics` text; None when a counter is missing (not stratus, or an old one).
    pub fn parse(text: &str) -> Option<StreamCounters> {
        Some(StreamCounters {
            bytes: metric_value(text, "stratus_bytes_sent_total")?,
            stanzas: metric_value(text, "stratus_stanzas_sent_total")?,
            writes: metric_value(text, "stratus_stream_writes_total")?,
        })
    }

    pub(super) async fn scrape(cfg: &LoadConfig) -> Option<StreamCounters> {
        StreamCounters::parse(&scrape(cfg.metrics.as_deref()?).await.ok()?)
    }

    pub(super) fn since(self, before: StreamCounters) -> StreamCounters {
        StreamCounters {
            bytes: self.bytes - before.bytes,
            stanzas: self.stanzas - before.stanzas,
            writes: self.writes - before.writes,
        }
    }
}

/// CPU time of the watched processes now; a process that cannot be read is an error naming it.
pub(super) fn cpu_snapshot(pids: &[(String, u32)]) -> Result<Vec<Duration>, ClientError> {
    pids.iter()
        .map(|(name, pid)| {
            process_cpu(*pid).map_err(|e| {
                ClientError::Protocol(format!(
                    "cannot read the CPU time of {name} (pid {pid}): {e}"
                ))
            })
        })
        .collect()
}
