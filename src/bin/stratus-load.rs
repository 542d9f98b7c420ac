//! `stratus-load`: publish-to-notification latency and throughput against any pubsub service.
//!
//!   stratus-load --server 127.0.0.1:5222 --domain localhost --service pubsub.localhost \
//!       --subscribers 100 --window 16 --count 200
//!   stratus-load --mode storm --users 1000 --contacts 50 --pep-nodes 5 --metrics 127.0.0.1:9105

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use stratus::client::TlsMode;
use stratus::load::storm::StormConfig;
use stratus::load::{self, LoadConfig, Mode, RawMessage};

/// What to run: [`Mode`]'s publish loads, or the login storm.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum CliMode {
    Pubsub,
    Raw,
    Storm,
}

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
    /// pubsub: XEP-0060 publishes; raw: the same messages sent directly (the server's own limit);
    /// storm: a login storm of PEP users (--users, --contacts, --pep-nodes).
    #[arg(long, value_enum, default_value = "pubsub")]
    mode: CliMode,
    /// Raw mode's message: the notification a pubsub service sends (the same bytes), or a
    /// minimal one (fewer elements and bytes: the server's parse cost, by difference).
    #[arg(long, value_enum, default_value = "notification")]
    raw_message: RawMessage,
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
    /// the first publish to the last notification is reported, per notification, and whose
    /// resident memory is sampled every second (plotted in --html). Repeatable.
    #[arg(long = "cpu-pid", value_name = "NAME=PID", value_parser = parse_cpu_pid)]
    cpu_pids: Vec<(String, u32)>,
    /// Storm: accounts (one resource each).
    #[arg(long, default_value_t = 100)]
    users: usize,
    /// Storm: contacts per account (even, fewer than --users), with mutual presence subscriptions.
    #[arg(long, default_value_t = 10)]
    contacts: usize,
    /// Storm: PEP nodes per account, one item each, asked for with +notify.
    #[arg(long, default_value_t = 5)]
    pep_nodes: usize,
    /// Storm: logins in progress at once.
    #[arg(long, default_value_t = 100)]
    logins_in_flight: usize,
    /// Storm: seconds until the missing last items count as missing.
    #[arg(long, default_value_t = 120.0)]
    timeout: f64,
    /// Storm: storms in turn (the first warms the service's caches).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Storm: print the roster entries the accounts need ("account contact" per line, bare
    /// JIDs, subscription both) and exit, for `scripts/xmpp-server.sh rosters DIR FILE`.
    #[arg(long)]
    print_rosters: bool,
    /// host:port of stratus's [http] listener: its outbound queue is sampled every second
    /// (publish loads), its store reads reported (storm).
    #[arg(long)]
    metrics: Option<String>,
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
    if a.mode == CliMode::Storm {
        return storm(a);
    }
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
        mode: if a.mode == CliMode::Raw {
            Mode::Raw
        } else {
            Mode::Pubsub
        },
        raw_message: a.raw_message,
        prefix: a.prefix,
        password: a.password,
        tls: a.starttls,
        tls_insecure: a.tls_insecure,
        drain: Duration::from_secs_f64(a.drain),
        cpu_pids: a.cpu_pids,
        metrics: a.metrics.clone(),
    };
    let Some(report) = block_on(load::run(cfg, !a.quiet)) else {
        return ExitCode::FAILURE;
    };
    print!("{}", report.table());
    if let Some(path) = &a.json
        && !write_json(path, &report)
    {
        return ExitCode::FAILURE;
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

/// Runs a load on a fresh runtime; None (said) when it cannot start or fails.
fn block_on<T>(
    run: impl std::future::Future<Output = Result<T, stratus::client::ClientError>>,
) -> Option<T> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| eprintln!("stratus-load: {e}"))
        .ok()?;
    rt.block_on(run)
        .map_err(|e| eprintln!("stratus-load: {e}"))
        .ok()
}

/// `--mode storm`: the login storm; fails (exit 3) when a last item is missing or came twice.
fn storm(a: Args) -> ExitCode {
    let cfg = StormConfig {
        server: a.server,
        domain: a.domain,
        prefix: a.prefix,
        password: a.password,
        tls: a.starttls,
        tls_insecure: a.tls_insecure,
        users: a.users,
        contacts: a.contacts,
        nodes: a.pep_nodes,
        payload: a.payload,
        logins_in_flight: a.logins_in_flight,
        timeout: Duration::from_secs_f64(a.timeout),
        rounds: a.rounds,
        metrics: a.metrics,
        cpu_pids: a.cpu_pids,
    };
    if a.print_rosters {
        if let Err(e) = cfg.check() {
            eprintln!("stratus-load: {e}");
            return ExitCode::FAILURE;
        }
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for line in cfg.roster_lines() {
            if writeln!(out, "{line}").is_err() {
                return ExitCode::FAILURE;
            }
        }
        return if out.flush().is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    let Some(report) = block_on(load::storm::run(cfg)) else {
        return ExitCode::FAILURE;
    };
    print!("{}", report.table());
    if let Some(path) = &a.json
        && !write_json(path, &report)
    {
        return ExitCode::FAILURE;
    }
    if !report.complete() {
        eprintln!("stratus-load: some last items were missing or duplicated");
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

/// The report as JSON into `path` ("-": standard output); false (said) when it cannot be written.
fn write_json(path: &str, report: &impl serde::Serialize) -> bool {
    let json = serde_json::to_string_pretty(report).unwrap_or_default();
    if path == "-" {
        println!("{json}");
    } else if let Err(e) = std::fs::write(path, json) {
        eprintln!("stratus-load: cannot write {path}: {e}");
        return false;
    }
    true
}
