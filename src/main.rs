//! The `stratus` binary: command line -> Config -> component::run until SIGTERM/Ctrl-C.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use stratus::component::Component;
use stratus::config::{Config, Overrides};
use stratus::pep::Pep;
use stratus::pubsub::PubSub;
use stratus::xmpp::Service;
use tracing::info;

#[derive(Parser)]
#[command(
    name = "stratus",
    version,
    about = "XEP-0060 pubsub and XEP-0163 PEP for any XMPP server, as an XEP-0114 component"
)]
struct Cli {
    #[command(flatten)]
    overrides: Overrides,
    /// Validate the configuration, print the effective values (secret masked) and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Storage administration.
    Storage {
        #[command(subcommand)]
        action: StorageAction,
    },
    /// Copy the embedded store of the running instance into FILE, consistently, without
    /// stopping it (through [http] listen, with the [admin] token).
    Backup { file: std::path::PathBuf },
    /// Load FILE (made by `stratus backup`) into the empty storage.data_dir, stratus stopped.
    Restore { file: std::path::PathBuf },
    /// Load users' PEP nodes (configuration, affiliations, subscriptions, items) from XEP-0227
    /// FILEs (prosody-migrator's output, or contrib/ejabberd's) into the configured store,
    /// through the same rules as clients' requests; running it again gives the same result.
    /// The embedded store: with stratus stopped.
    Import {
        #[arg(required = true)]
        files: Vec<std::path::PathBuf>,
    },
    /// Write every user's PEP nodes (configuration, affiliations, subscriptions, items) from the
    /// configured store into FILE as XEP-0227, the form `import` reads. The embedded store: with
    /// stratus stopped.
    Export { file: std::path::PathBuf },
    /// Run an administrators' command on the running instance (through [http] listen, with the
    /// [admin] token), as the service itself. COMMAND: list-nodes, node-config, delete-node,
    /// purge-node, delete-item, list-subscriptions, cancel-subscription. FIELDS: var=value, e.g.
    /// `stratus admin node-config node=news pubsub#max_items=10` (a var given twice: a list).
    Admin {
        command: String,
        fields: Vec<String>,
    },
}

#[derive(clap::Subcommand)]
enum StorageAction {
    /// Create what the configured backend needs (aws: the DynamoDB table and the S3 bucket).
    Init,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Storage-only commands need only a valid [storage] (no component secret): they set the store
    // up before the component is, or with stratus stopped.
    let storage_only = matches!(
        cli.command,
        Some(
            Command::Storage { .. }
                | Command::Restore { .. }
                | Command::Import { .. }
                | Command::Export { .. }
        )
    );
    let loaded = if storage_only {
        Config::load_storage(&cli.overrides)
    } else {
        Config::load(&cli.overrides)
    };
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("stratus: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config {
        println!("# effective configuration (file < environment < flags)");
        print!("{}", config.to_masked_toml());
        return ExitCode::SUCCESS;
    }
    let log_filter = init_logging(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("stratus: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Storage {
        action: StorageAction::Init,
    }) = cli.command
    {
        return match runtime.block_on(stratus::storage::init(&config.storage)) {
            Ok(done) => {
                println!("{done}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("stratus: storage init failed: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // Configurations read again on SIGHUP, for run() to apply what can change while running.
    let (reloaded, reloads) = tokio::sync::watch::channel(None::<Arc<Config>>);
    #[cfg(unix)]
    runtime.spawn(reload_on_sighup(
        cli.overrides.clone(),
        log_filter,
        reloaded,
    ));
    #[cfg(not(unix))]
    drop((log_filter, reloaded));
    match cli.command {
        Some(Command::Backup { file }) => return runtime.block_on(backup(&config, &file)),
        Some(Command::Restore { file }) => return restore(&config, &file),
        Some(Command::Import { files }) => return runtime.block_on(import(&config, &files)),
        Some(Command::Export { file }) => return runtime.block_on(export(&config, &file)),
        Some(Command::Admin { command, fields }) => {
            return runtime.block_on(admin(&config, &command, &fields));
        }
        _ => {}
    }
    match runtime.block_on(run(config, reloads)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stratus: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    config: Config,
    mut reloads: tokio::sync::watch::Receiver<Option<Arc<Config>>>,
) -> Result<(), Box<dyn std::error::Error>> {
    let config = Arc::new(config);
    info!(
        "stratus {} serving {} via {}",
        env!("CARGO_PKG_VERSION"),
        config.component.domain,
        config.component.server
    );
    let store = stratus::storage::open(&config.storage).await?;
    match config.storage.backend {
        stratus::config::StorageBackend::Embedded => {
            info!("embedded store in {}", config.storage.data_dir.display())
        }
        stratus::config::StorageBackend::Memory => {
            info!("memory store: nothing survives a restart")
        }
        stratus::config::StorageBackend::Aws => info!(
            "aws store: table {}, bucket {}",
            config.storage.aws.table, config.storage.aws.bucket
        ),
    }
    let component = Component::new(config.clone());
    // Bound before connecting, so that a bad address fails the start rather than later.
    let listener = match &config.http.listen {
        Some(addr) => Some(
            stratus::http::bind(addr)
                .await
                .map_err(|e| format!("http.listen {addr}: {e}"))?,
        ),
        None => None,
    };
    let servers = config.pep_servers();
    info!("PEP for the users of {servers:?} (XEP-0355/XEP-0356, when the server delegates)");
    let pep = Arc::new(Pep::new(
        &config.component.domain,
        servers,
        component.outbox(),
        component.requests(),
        config.pep.cache_entries,
    ));
    let pubsub = Arc::new(PubSub::new(
        store.clone(),
        config.pubsub.limits(config.storage.backend),
        Arc::new(pep.clone()),
    ));
    let service_jid = stratus::jid::BareJid::parse(&config.component.domain)?;
    pubsub.set_admins(admins(&config, &service_jid));
    let applying = {
        let (pubsub, running) = (pubsub.clone(), config.clone());
        let input_limits = component.input_limits();
        tokio::spawn(async move {
            while reloads.changed().await.is_ok() {
                let Some(new) = reloads.borrow_and_update().clone() else {
                    continue;
                };
                apply_reload(&running, &new, &pubsub, &input_limits);
                pubsub.set_admins(admins(&new, &service_jid));
            }
        })
    };
    let service = Arc::new(Service::new(
        &config.component.domain,
        pubsub,
        Some(pep),
        component.requests(),
        config.pubsub.multicast,
    )?);
    let http = listener.map(|listener| {
        let state = Arc::new(stratus::http::State {
            outbox: component.outbox(),
            store,
            admin_token: config.admin.token.clone(),
            service: service.clone(),
        });
        tokio::spawn(stratus::http::serve(listener, state))
    });
    stratus::systemd::start_watchdog();
    component
        .run(service, async {
            shutdown_signal().await;
            stratus::systemd::stopping();
        })
        .await?;
    applying.abort();
    if let Some(task) = http {
        task.abort();
    }
    info!("stopped");
    Ok(())
}

async fn admin(config: &Config, command: &str, args: &[String]) -> ExitCode {
    use serde_json::Value;
    let (Some(addr), Some(token)) = (&config.http.listen, &config.admin.token) else {
        eprintln!(
            "stratus: admin needs [http] listen and [admin] token (those of the running instance)"
        );
        return ExitCode::from(2);
    };
    let mut fields = serde_json::Map::new();
    for arg in args {
        let Some((var, value)) = arg.split_once('=') else {
            eprintln!("stratus: {arg:?}: fields are var=value");
            return ExitCode::from(2);
        };
        let value = Value::String(value.to_owned());
        match fields.get_mut(var) {
            Some(Value::Array(list)) => list.push(value),
            Some(one) => *one = Value::Array(vec![one.take(), value]),
            None => {
                fields.insert(var.to_owned(), value);
            }
        }
    }
    let answer = match stratus::http::run_admin_command(addr, token, command, &fields).await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("stratus: admin {command}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(note) = answer["note"].as_str() {
        println!("{note}");
    }
    if let Some(rows) = answer["rows"].as_array().filter(|r| !r.is_empty()) {
        if let Some(Value::Object(first)) = rows.first() {
            println!("{}", first.keys().cloned().collect::<Vec<_>>().join("\t"));
        }
        for row in rows {
            if let Value::Object(o) = row {
                let cells: Vec<&str> = o.values().map(|v| v.as_str().unwrap_or("")).collect();
                println!("{}", cells.join("\t"));
            }
        }
    }
    if let Some(Value::Object(form)) = answer.get("fields") {
        for (var, values) in form {
            let values: Vec<&str> = values
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            println!("{var} = {}", values.join(", "));
        }
    }
    ExitCode::SUCCESS
}

async fn backup(config: &Config, file: &std::path::Path) -> ExitCode {
    let (Some(addr), Some(token)) = (&config.http.listen, &config.admin.token) else {
        eprintln!(
            "stratus: backup needs [http] listen and [admin] token (those of the running instance)"
        );
        return ExitCode::from(2);
    };
    let bytes = match stratus::http::fetch_backup(addr, token).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!("stratus: backup failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Written aside, then renamed: FILE is never a partial backup.
    let partial = file.with_extension("partial");
    let written = std::fs::write(&partial, &bytes).and_then(|()| std::fs::rename(&partial, file));
    match written {
        Ok(()) => {
            println!(
                "backup of {} bytes written to {}",
                bytes.len(),
                file.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stratus: cannot write {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

/// The store for a command run beside (aws) or instead of (embedded) the service.
async fn open_offline(config: &Config) -> Option<Arc<dyn stratus::storage::Store>> {
    match stratus::storage::open(&config.storage).await {
        Ok(s) => Some(s),
        Err(e) => {
            eprintln!(
                "stratus: cannot open the store (the embedded one needs stratus stopped): {e}"
            );
            None
        }
    }
}

async fn import(config: &Config, files: &[std::path::PathBuf]) -> ExitCode {
    let Some(store) = open_offline(config).await else {
        return ExitCode::FAILURE;
    };
    let pubsub = PubSub::new(
        store.clone(),
        config.pubsub.limits(config.storage.backend),
        Arc::new(stratus::pubsub::service::NoRoster),
    );
    let mut failed = false;
    for file in files {
        let xml = match std::fs::read_to_string(file) {
            Ok(x) => x,
            Err(e) => {
                eprintln!("stratus: cannot read {}: {e}", file.display());
                failed = true;
                continue;
            }
        };
        match stratus::xmpp::xep0227::import(&pubsub, &xml).await {
            Ok(report) => {
                failed |= !report.refused.is_empty();
                println!("{}: {report} imported", file.display());
            }
            Err(e) => {
                eprintln!("stratus: {}: {e}", file.display());
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

async fn export(config: &Config, file: &std::path::Path) -> ExitCode {
    let Some(store) = open_offline(config).await else {
        return ExitCode::FAILURE;
    };
    let (xml, report) = match stratus::xmpp::xep0227::export(&*store).await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("stratus: export failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Written aside, then renamed: FILE is never a partial export.
    let partial = file.with_extension("partial");
    match std::fs::write(&partial, xml).and_then(|()| std::fs::rename(&partial, file)) {
        Ok(()) => {
            println!("{}: {report} exported", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stratus: cannot write {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

fn restore(config: &Config, file: &std::path::Path) -> ExitCode {
    if config.storage.backend != stratus::config::StorageBackend::Embedded {
        eprintln!("stratus: restore loads the embedded store; storage.backend is not embedded");
        return ExitCode::from(2);
    }
    let input = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("stratus: cannot read {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let mut input = std::io::BufReader::new(input);
    match stratus::storage::backup::restore(&config.storage.data_dir, &mut input) {
        Ok(n) => {
            println!(
                "{n} records restored into {}",
                config.storage.data_dir.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stratus: restore failed: {e}");
            ExitCode::FAILURE
        }
    }
}

type LogFilter =
    tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, tracing_subscriber::Registry>;

/// Text or JSON lines on stderr, through a filter SIGHUP can replace.
fn init_logging(log: &stratus::config::LogConfig) -> LogFilter {
    use tracing_subscriber::prelude::*;
    let (filter, handle) =
        tracing_subscriber::reload::Layer::new(tracing_subscriber::EnvFilter::new(&log.level));
    let registry = tracing_subscriber::registry().with(filter);
    match log.format {
        stratus::config::LogFormat::Text => registry
            .with(tracing_subscriber::fmt::layer().with_target(false))
            .init(),
        stratus::config::LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_target(false)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .init(),
    }
    handle
}

/// The service administrators: `[admin] jids`, and the service's own JID, as which
/// `stratus admin` runs its commands.
fn admins(config: &Config, service: &stratus::jid::BareJid) -> Vec<stratus::jid::BareJid> {
    let mut admins = config.admin.admins();
    admins.push(service.clone());
    admins
}

/// What a configuration read again on SIGHUP changes while running: the `[pubsub]` limits, from
/// the next request on, the stream's input limits (`[component] max_*`), from the next stanza
/// on, and the administrators (`run`). The rest (connection, queues, storage, PEP, HTTP, the
/// admin token, the cache bound) is fixed
/// at start: a change there is logged as needing a restart.
fn apply_reload(
    running: &Config,
    new: &Config,
    pubsub: &PubSub,
    input: &arc_swap::ArcSwap<stratus::xml::Limits>,
) {
    let limits = new.pubsub.limits(running.storage.backend);
    if !pubsub.set_limits(limits) {
        tracing::warn!("SIGHUP: pubsub.cache_ttl_ms changes only on restart");
    }
    let input_limits = new.limits();
    input.store(Arc::new(input_limits));
    let fixed = [
        (
            "component",
            !running.component.same_connection(&new.component),
        ),
        ("storage", running.storage != new.storage),
        ("pep", running.pep != new.pep),
        ("http", running.http != new.http),
        ("admin", running.admin.token != new.admin.token),
    ];
    for (section, changed) in fixed {
        if changed {
            tracing::warn!("SIGHUP: [{section}] changed; it applies only on restart");
        }
    }
    info!("SIGHUP: [pubsub] limits applied: {limits:?}; stream input limits: {input_limits:?}");
    stratus::metrics::metrics().config_reloads.inc();
}

/// SIGHUP: read the configuration again (file, environment, flags) and apply its log level,
/// then hand it to run() for the limits; the stream and everything else keep running. An
/// invalid file changes nothing.
#[cfg(unix)]
async fn reload_on_sighup(
    overrides: Overrides,
    filter: LogFilter,
    reloaded: tokio::sync::watch::Sender<Option<Arc<Config>>>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        match Config::load(&overrides) {
            Ok(config) => {
                let level = config.log.level.clone();
                match filter.reload(tracing_subscriber::EnvFilter::new(&level)) {
                    Ok(()) => info!("SIGHUP: configuration read again; log level {level:?}"),
                    Err(e) => tracing::warn!("SIGHUP: cannot change the log level: {e}"),
                }
                reloaded.send_replace(Some(Arc::new(config)));
            }
            Err(e) => tracing::error!("SIGHUP: configuration not reloaded: {e}"),
        }
    }
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
