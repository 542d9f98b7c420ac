//! `stratus-load`: publish-to-notification latency and throughput against any pubsub service.
//!
//!   stratus-load --server 127.0.0.1:5222 --domain localhost --service pubsub.localhost \
//!       --subscribers 100 --window 16 --count 200

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use stratus::client::TlsMode;
use stratus::load::{self, LoadConfig, Mode};

#[derive(Parser)]
#[command(
    name = "stratus-load",
    version,
    about = "Measure publish -> notification latency and throughput of any XMPP pubsub service"
)]
struct Args {
    /// c2s host:port of the XMPP server.
    #[arg(long, default_value = "127.0.0.1:5222")]
    server: String,
    /// XMPP domain of the test accounts.
    #[arg(long, default_value = "localhost")]
    domain: String,
    /// Pubsub service JID (stratus, the server's built-in service...).
    #[arg(long, default_value = "pubsub.localhost")]
    service: String,
    /// Node to create (or reuse) and publish to.
    #[arg(long, default_value = "load")]
    node: String,
    /// Publishing accounts.
    #[arg(long, short = 'P', default_value_t = 1)]
    publishers: usize,
    /// Subscribing accounts.
    #[arg(long, short = 'N', default_value_t = 10)]
    subscribers: usize,
    /// Publishes in flight per publisher (closed loop).
    #[arg(long, short = 'W', default_value_t = 1)]
    window: usize,
    /// Publishes per second per publisher (open loop; overrides --window).
    #[arg(long)]
    rate: Option<f64>,
    /// Items per publisher.
    #[arg(long, short = 'M', default_value_t = 200)]
    count: u64,
    /// Stop publishing after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Payload bytes per item.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// pubsub: XEP-0060 publishes; raw: the same messages sent directly (the server's own limit).
    #[arg(long, value_enum, default_value = "pubsub")]
    mode: Mode,
    /// Account name prefix; accounts are registered in-band when missing.
    #[arg(long, default_value = "load")]
    prefix: String,
    #[arg(long, default_value = "load-pass")]
    password: String,
    /// STARTTLS: auto (when the server requires it), always, or never.
    #[arg(long, value_enum, default_value = "auto")]
    starttls: TlsMode,
    /// Accept any server certificate (private servers with self-signed certificates).
    #[arg(long)]
    tls_insecure: bool,
    /// Seconds to wait for late notifications after the last publish.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Write the report as JSON to this file ("-": standard output).
    #[arg(long)]
    json: Option<String>,
    /// Write a self-contained HTML report to this file.
    #[arg(long)]
    html: Option<String>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// NAME=PID of a local process (the XMPP server, the pubsub component) whose CPU time from
    /// the first publish to the last notification is reported, per notification. Repeatable.
    #[arg(long = "cpu-pid", value_name = "NAME=PID", value_parser = parse_cpu_pid)]
    cpu_pids: Vec<(String, u32)>,
}

fn parse_cpu_pid(s: &str) -> Result<(String, u32), String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PID, got {s:?}"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("{pid:?} is not a process id"))?;
    if name.is_empty() {
        return Err(format!("expected NAME=PID, got {s:?}"));
    }
    Ok((name.to_owned(), pid))
}

fn main() -> ExitCode {
    let a = Args::parse();
    let cfg = LoadConfig {
        server: a.server,
        domain: a.domain,
        service: a.service,
        node: a.node,
        publishers: a.publishers.max(1),
        subscribers: a.subscribers,
        window: a.window.max(1),
        rate: a.rate,
        count: a.count,
        duration: a.duration.map(Duration::from_secs_f64),
        payload: a.payload,
        mode: a.mode,
        prefix: a.prefix,
        password: a.password,
        tls: a.starttls,
        tls_insecure: a.tls_insecure,
        drain: Duration::from_secs_f64(a.drain),
        cpu_pids: a.cpu_pids,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("stratus-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = match rt.block_on(load::run(cfg, !a.quiet)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stratus-load: {e}");
            return ExitCode::FAILURE;
        }
    };
    print!("{}", report.table());
    if let Some(path) = a.json {
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        if path == "-" {
            println!("{json}");
        } else if let Err(e) = std::fs::write(&path, json) {
            eprintln!("stratus-load: cannot write {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(path) = a.html
        && let Err(e) = std::fs::write(&path, report.html())
    {
        eprintln!("stratus-load: cannot write {path}: {e}");
        return ExitCode::FAILURE;
    }
    if report.lost > 0 || report.publish_errors > 0 {
        eprintln!(
            "stratus-load: {} notifications lost, {} publish errors",
            report.lost, report.publish_errors
        );
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}
