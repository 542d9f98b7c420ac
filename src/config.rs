//! Configuration: one [`Config`] from defaults, a TOML file, `STRATUS_*` environment variables and
//! command-line flags, in increasing order of precedence. `config/stratus.example.toml` documents
//! every key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::jid::Jid;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub component: ComponentConfig,
    pub storage: StorageConfig,
    pub pubsub: PubSubConfig,
    pub pep: PepConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub admin: AdminConfig,
}

/// Administration: the service administrators' ad-hoc commands, and the HTTP listener's admin
/// endpoints (`stratus backup`, `stratus admin`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bare JIDs of the service administrators: they get the XEP-0050 admin commands and own
    /// every node of the host service (not users' PEP nodes). Applied again on SIGHUP.
    pub jids: Vec<String>,
    /// Bearer token the admin endpoints of `[http] listen` require; none: they are off.
    pub token: Option<String>,
}

impl AdminConfig {
    /// The administrators (entries that are not bare JIDs are refused by `validate`).
    pub fn admins(&self) -> Vec<crate::jid::BareJid> {
        self.jids
            .iter()
            .filter_map(|j| crate::jid::BareJid::parse(j).ok())
            .collect()
    }
}

/// The operator's HTTP listener: `/metrics` (Prometheus text format) and `/health`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// host:port to listen on; none (the default) serves nothing. Keep it on loopback or behind
    /// a firewall: the metrics tell how busy the service is.
    pub listen: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PepConfig {
    /// Server domains whose users stratus serves PEP for (the only senders of delegated IQs and
    /// privileges it accepts). Empty: the parent domain of component.domain.
    pub servers: Vec<String>,
    /// Entries each PEP cache holds at most (XEP-0115 caps hashes, caps of single resources,
    /// rosters): the bound on their memory whatever users send.
    pub cache_entries: u64,
}

impl Default for PepConfig {
    fn default() -> Self {
        PepConfig {
            servers: Vec::new(),
            cache_entries: crate::pep::DEFAULT_CACHE_ENTRIES,
        }
    }
}

impl Config {
    /// The server domains PEP serves: configured, or the parent of the component domain; in
    /// their prepared form (nameprep), as the domains of the JIDs they are compared with.
    pub fn pep_servers(&self) -> Vec<String> {
        let configured = if !self.pep.servers.is_empty() {
            self.pep.servers.clone()
        } else {
            match self.component.domain.split_once('.') {
                Some((_, parent)) if !parent.is_empty() => vec![parent.to_owned()],
                _ => Vec::new(),
            }
        };
        configured
            .iter()
            .filter_map(|d| Jid::parse(d).ok())
            .filter(|j| j.node().is_none() && j.resource().is_none())
            .map(|j| j.domain().to_owned())
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PubSubConfig {
    /// Largest item payload accepted, in bytes (payload-too-big beyond).
    pub max_payload_bytes: u64,
    /// Most items a node keeps; `pubsub#max_items = max` means this.
    pub max_items_per_node: u64,
    /// Most nodes one user may create on the host service.
    pub max_nodes_per_user: u64,
    /// Most items or nodes returned in one answer (RSM pages are capped to this).
    pub max_page: usize,
    /// Most payload bytes in one items answer (at least one item is always returned; the answer
    /// then carries an RSM set saying where to go on).
    pub max_page_bytes: usize,
    /// Most subscriptions one bare JID may hold on one node (across its resources).
    pub max_subscriptions_per_node: usize,
    /// Most subscriptions one bare JID may hold on the whole service.
    pub max_subscriptions_per_user: usize,
    /// `pubsub#item_expire` of new nodes, in seconds; 0: items never expire unless a node says
    /// so. Expired items are deleted (and retracted where `pubsub#notify_retract` says so).
    pub default_item_expire_seconds: u64,
    /// Milliseconds a cached node/subscriber list/last item is kept (a bound on memory; on the
    /// aws backend each request checks its node's version, so correctness does not depend on
    /// it). Unset: 2000 with the aws backend, no expiry with the single-instance backends.
    pub cache_ttl_ms: Option<u64>,
    /// Send a notification for several subscribers of one server as one XEP-0033 stanza when
    /// that server offers a multicast service (ejabberd's mod_multicast).
    pub multicast: bool,
}

impl Default for PubSubConfig {
    fn default() -> Self {
        let l = crate::pubsub::Limits::default();
        PubSubConfig {
            max_payload_bytes: l.max_payload_bytes,
            max_items_per_node: l.max_items_per_node,
            max_nodes_per_user: l.max_nodes_per_user,
            max_page: l.max_page,
            max_page_bytes: l.max_page_bytes,
            max_subscriptions_per_node: l.max_subscriptions_per_node,
            max_subscriptions_per_user: l.max_subscriptions_per_user,
            default_item_expire_seconds: 0,
            cache_ttl_ms: None,
            multicast: true,
        }
    }
}

impl PubSubConfig {
    /// The limits, with the cache bound the backend calls for.
    pub fn limits(&self, backend: StorageBackend) -> crate::pubsub::Limits {
        let ttl_ms = match (self.cache_ttl_ms, backend) {
            (Some(ms), _) => Some(ms),
            (None, StorageBackend::Aws) => Some(2000),
            (None, _) => None,
        };
        crate::pubsub::Limits {
            max_payload_bytes: self.max_payload_bytes,
            max_items_per_node: self.max_items_per_node,
            max_nodes_per_user: self.max_nodes_per_user,
            max_page: self.max_page,
            max_page_bytes: self.max_page_bytes,
            max_subscriptions_per_node: self.max_subscriptions_per_node,
            max_subscriptions_per_user: self.max_subscriptions_per_user,
            default_item_expire: (self.default_item_expire_seconds > 0)
                .then_some(self.default_item_expire_seconds),
            cache_ttl: ttl_ms
                .filter(|ms| *ms > 0)
                .map(std::time::Duration::from_millis),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ComponentConfig {
    /// host:port of the XMPP server's component listener.
    pub server: String,
    /// The component's domain, e.g. pubsub.example.org.
    pub domain: String,
    /// The shared secret of the component listener.
    pub secret: String,
    /// Seconds of outbound silence after which a whitespace keepalive is sent (0: never).
    pub keepalive_seconds: u64,
    /// Seconds to wait for the TCP connection and the handshake.
    pub connect_timeout_seconds: u64,
    /// First reconnect delay in milliseconds; doubled after each failure, with jitter.
    pub reconnect_initial_ms: u64,
    /// Upper bound of the reconnect delay in milliseconds.
    pub reconnect_max_ms: u64,
    /// Stanzas queued for the writer before producers wait (back-pressure).
    pub outbound_queue: usize,
    /// Bytes waiting to be written before producers are made to wait.
    pub outbound_queue_bytes: usize,
    /// Bytes written to the server that it has not handled yet, at most (a ping after every
    /// quarter tells how far it got): keeps our questions from queueing behind a backlog inside
    /// the server. 0: no window.
    pub in_flight_bytes: u64,
    /// Largest stanza accepted from the server, in bytes. A larger one is skipped and its sender
    /// gets a policy-violation error; the stream goes on.
    pub max_stanza_bytes: usize,
    /// Deepest element nesting accepted inside one stanza (the same: skipped and bounced).
    pub max_depth: usize,
    /// Most attributes on one element of a stanza, namespace declarations included.
    pub max_attributes: usize,
    /// Most namespace declarations in one stanza.
    pub max_namespace_declarations: usize,
    /// Longest namespace name (URI) accepted, in bytes.
    pub max_uri_bytes: usize,
    /// Most child elements of one element.
    pub max_children: usize,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    /// The embedded on-disk database under data_dir (default).
    Embedded,
    /// Everything in memory: lost on exit. For tests and demos.
    Memory,
    /// Items in S3, nodes and subscriptions in DynamoDB (needs the `aws` build feature).
    Aws,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// Directory of the embedded store.
    pub data_dir: PathBuf,
    pub aws: AwsConfig,
}

/// `[storage.aws]`: where the aws backend keeps things. Credentials come from the standard AWS
/// chain (environment, profile, instance role).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AwsConfig {
    pub bucket: String,
    pub table: String,
    pub region: String,
    /// Endpoint override for S3- and DynamoDB-compatible servers at one address (e.g. moto at
    /// http://127.0.0.1:5000): a shorthand for both of the next two.
    pub endpoint: Option<String>,
    /// Endpoint of an S3-compatible server (MinIO, Ceph, Garage); wins over `endpoint`.
    pub s3_endpoint: Option<String>,
    /// Endpoint of a DynamoDB-compatible server (DynamoDB Local, ScyllaDB Alternator); wins over
    /// `endpoint`.
    pub dynamodb_endpoint: Option<String>,
    /// Path-style S3 addressing (most S3-compatible servers want it).
    pub path_style: bool,
}

impl Default for AwsConfig {
    fn default() -> Self {
        AwsConfig {
            bucket: "stratus".into(),
            table: "stratus".into(),
            region: "us-east-1".into(),
            endpoint: None,
            s3_endpoint: None,
            dynamodb_endpoint: None,
            path_style: false,
        }
    }
}

impl AwsConfig {
    /// The S3 endpoint override in effect.
    pub fn s3_endpoint(&self) -> Option<&str> {
        self.s3_endpoint.as_deref().or(self.endpoint.as_deref())
    }

    /// The DynamoDB endpoint override in effect.
    pub fn dynamodb_endpoint(&self) -> Option<&str> {
        self.dynamodb_endpoint
            .as_deref()
            .or(self.endpoint.as_deref())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: error, warn, info, debug, trace, or directives like "stratus=debug".
    /// SIGHUP reads it again.
    pub level: String,
    /// `text` (for people) or `json` (one object per line, for log collectors).
    pub format: LogFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for ComponentConfig {
    fn default() -> Self {
        let xml = crate::xml::Limits::default();
        ComponentConfig {
            server: "127.0.0.1:5347".into(),
            domain: "pubsub.localhost".into(),
            secret: String::new(),
            keepalive_seconds: 60,
            connect_timeout_seconds: 10,
            reconnect_initial_ms: 500,
            reconnect_max_ms: 30_000,
            outbound_queue: 8192,
            outbound_queue_bytes: crate::component::outbox::DEFAULT_QUEUE_BYTES,
            in_flight_bytes: crate::component::flow::DEFAULT_WINDOW,
            max_stanza_bytes: xml.max_stanza_bytes,
            max_depth: xml.max_depth,
            max_attributes: xml.max_attributes,
            max_namespace_declarations: xml.max_namespace_declarations,
            max_uri_bytes: xml.max_uri_bytes,
            max_children: xml.max_children,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: StorageBackend::Embedded,
            data_dir: PathBuf::from("./data"),
            aws: AwsConfig::default(),
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

/// Values given on the command line or in the environment; each overrides the file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Overrides {
    /// TOML configuration file (see config/stratus.example.toml).
    #[arg(long, env = "STRATUS_CONFIG", value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// host:port of the XMPP server's component listener.
    #[arg(long, env = "STRATUS_SERVER", value_name = "HOST:PORT", global = true)]
    pub server: Option<String>,
    /// The component domain, e.g. pubsub.example.org.
    #[arg(long, env = "STRATUS_DOMAIN", global = true)]
    pub domain: Option<String>,
    /// The component secret shared with the server.
    #[arg(long, env = "STRATUS_SECRET", hide_env_values = true, global = true)]
    pub secret: Option<String>,
    /// Where the embedded store keeps its files.
    #[arg(long, env = "STRATUS_DATA_DIR", value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// Storage backend.
    #[arg(long, env = "STRATUS_STORAGE", value_enum, global = true)]
    pub storage: Option<StorageBackend>,
    /// Log filter (error, warn, info, debug, trace, or tracing directives).
    #[arg(long, env = "STRATUS_LOG_LEVEL", value_name = "FILTER", global = true)]
    pub log_level: Option<String>,
    /// host:port for /metrics and /health (e.g. 127.0.0.1:9105); off unless set.
    #[arg(
        long,
        env = "STRATUS_HTTP_LISTEN",
        value_name = "HOST:PORT",
        global = true
    )]
    pub http_listen: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

impl Config {
    /// Defaults, then the file named by `overrides.config` (if any), then the overrides.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match &overrides.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// [`Config::load`] for the commands that only touch storage (`stratus storage init`,
    /// `stratus restore`): only the `[storage]` section must be valid, so they run before the
    /// component is set up (no secret needed).
    pub fn load_storage(overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut config = match &overrides.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        config.apply(overrides);
        let problems = config.storage_problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// What is wrong in `[storage]`, each saying what to fix.
    fn storage_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let aws = &self.storage.aws;
        for (name, value) in [
            ("endpoint", &aws.endpoint),
            ("s3_endpoint", &aws.s3_endpoint),
            ("dynamodb_endpoint", &aws.dynamodb_endpoint),
        ] {
            if let Some(v) = value
                && !(v.starts_with("http://") || v.starts_with("https://"))
            {
                problems.push(format!(
                    "storage.aws.{name} must be a URL such as http://127.0.0.1:8000, got {v:?}"
                ));
            }
        }
        if aws.bucket.is_empty() || aws.table.is_empty() || aws.region.is_empty() {
            problems.push(
                "storage.aws.bucket, storage.aws.table and storage.aws.region must not be empty"
                    .into(),
            );
        }
        problems
    }

    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    fn apply(&mut self, o: &Overrides) {
        if let Some(v) = &o.server {
            self.component.server = v.clone();
        }
        if let Some(v) = &o.domain {
            self.component.domain = v.clone();
        }
        if let Some(v) = &o.secret {
            self.component.secret = v.clone();
        }
        if let Some(v) = &o.data_dir {
            self.storage.data_dir = v.clone();
        }
        if let Some(v) = o.storage {
            self.storage.backend = v;
        }
        if let Some(v) = &o.log_level {
            self.log.level = v.clone();
        }
        if let Some(v) = &o.http_listen {
            self.http.listen = Some(v.clone());
        }
    }

    /// Checks every value and reports all problems at once, each saying what to fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = self.storage_problems();
        let c = &self.component;
        match c.server.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => problems.push(format!(
                "component.server (--server) must be HOST:PORT, got {:?}",
                c.server
            )),
        }
        match Jid::parse(&c.domain) {
            Ok(j) if j.node().is_none() && j.resource().is_none() => {}
            _ => problems.push(format!(
                "component.domain (--domain) must be a domain such as pubsub.example.org, got {:?}",
                c.domain
            )),
        }
        if let Some(listen) = &self.http.listen
            && listen.parse::<std::net::SocketAddr>().is_err()
        {
            problems.push(format!(
                "http.listen (--http-listen) must be IP:PORT such as 127.0.0.1:9105, got {listen:?}"
            ));
        }
        for admin in &self.admin.jids {
            match Jid::parse(admin) {
                Ok(j) if j.resource().is_none() => {}
                _ => problems.push(format!(
                    "admin.jids must list bare JIDs such as admin@example.org, got {admin:?}"
                )),
            }
        }
        for server in &self.pep.servers {
            match Jid::parse(server) {
                Ok(j) if j.node().is_none() && j.resource().is_none() => {}
                _ => problems.push(format!(
                    "pep.servers must list server domains such as example.org, got {server:?}"
                )),
            }
        }
        if c.secret.is_empty() {
            problems.push(
                "component.secret (--secret) is empty: set it to the server's component secret"
                    .into(),
            );
        }
        if c.outbound_queue_bytes < 1 << 20 {
            problems.push("component.outbound_queue_bytes must be at least 1048576".into());
        }
        if c.in_flight_bytes != 0 && c.in_flight_bytes < 1 << 16 {
            problems
                .push("component.in_flight_bytes must be 0 (no window) or at least 65536".into());
        }
        if c.outbound_queue == 0 {
            problems.push("component.outbound_queue must be at least 1".into());
        }
        if c.max_stanza_bytes < 4096 {
            problems.push("component.max_stanza_bytes must be at least 4096".into());
        }
        if !(4..=1000).contains(&c.max_depth) {
            problems.push("component.max_depth must be between 4 and 1000".into());
        }
        if c.max_attributes < 8 || c.max_namespace_declarations < 4 || c.max_children < 16 {
            problems.push(
                "component.max_attributes must be at least 8, component.max_namespace_declarations \
                 at least 4 and component.max_children at least 16 (stanzas need them)"
                    .into(),
            );
        }
        if c.max_uri_bytes < 256 {
            problems.push("component.max_uri_bytes must be at least 256".into());
        }
        if c.reconnect_initial_ms == 0 || c.reconnect_max_ms < c.reconnect_initial_ms {
            problems.push(
                "component.reconnect_initial_ms must be > 0 and <= component.reconnect_max_ms"
                    .into(),
            );
        }
        if c.connect_timeout_seconds == 0 {
            problems.push("component.connect_timeout_seconds must be > 0".into());
        }
        if self.pubsub.max_payload_bytes as usize > c.max_stanza_bytes {
            problems.push(format!(
                "pubsub.max_payload_bytes ({}) must not exceed component.max_stanza_bytes ({}): the stanza carries the payload",
                self.pubsub.max_payload_bytes, c.max_stanza_bytes
            ));
        }
        if self.pubsub.max_items_per_node == 0 || self.pubsub.max_page == 0 {
            problems
                .push("pubsub.max_items_per_node and pubsub.max_page must be at least 1".into());
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            problems.push(format!("log.level (--log-level) {:?}: {e}", self.log.level));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The effective configuration as TOML, with the secret masked.
    pub fn to_masked_toml(&self) -> String {
        let mut shown = self.clone();
        if !shown.component.secret.is_empty() {
            shown.component.secret = "********".into();
        }
        if shown.admin.token.is_some() {
            shown.admin.token = Some("********".into());
        }
        toml::to_string_pretty(&shown).unwrap_or_else(|e| format!("# cannot render: {e}"))
    }

    pub fn keepalive(&self) -> Option<Duration> {
        (self.component.keepalive_seconds > 0)
            .then(|| Duration::from_secs(self.component.keepalive_seconds))
    }

    /// The input limits of `[component]`, which SIGHUP may change while the stream runs.
    pub fn limits(&self) -> crate::xml::Limits {
        let c = &self.component;
        crate::xml::Limits {
            max_stanza_bytes: c.max_stanza_bytes,
            max_depth: c.max_depth,
            max_attributes: c.max_attributes,
            max_namespace_declarations: c.max_namespace_declarations,
            max_uri_bytes: c.max_uri_bytes,
            max_children: c.max_children,
        }
    }
}

impl ComponentConfig {
    /// Whether `other` connects as this does: the same settings but for the input limits (the
    /// part of `[component]` a reload applies, see [`Config::limits`]).
    pub fn same_connection(&self, other: &ComponentConfig) -> bool {
        *self
            == ComponentConfig {
                max_stanza_bytes: self.max_stanza_bytes,
                max_depth: self.max_depth,
                max_attributes: self.max_attributes,
                max_namespace_declarations: self.max_namespace_declarations,
                max_uri_bytes: self.max_uri_bytes,
                max_children: self.max_children,
                ..other.clone()
            }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload applies the input limits; anything else in `[component]` is a new connection.
    #[test]
    fn same_connection_ignores_only_the_input_limits() {
        let running = ComponentConfig::default();
        let limits_only = ComponentConfig {
            max_stanza_bytes: 4096,
            max_children: 8,
            ..ComponentConfig::default()
        };
        assert!(running.same_connection(&limits_only));
        let other_secret = ComponentConfig {
            secret: "other".into(),
            ..limits_only.clone()
        };
        assert!(!running.same_connection(&other_secret));
    }

    #[test]
    fn example_file_parses_and_matches_defaults_where_documented() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/stratus.example.toml");
        let cfg = Config::from_file(&path).unwrap();
        assert_eq!(cfg.component.max_stanza_bytes, 512 * 1024);
        assert_eq!(cfg.storage.backend, StorageBackend::Embedded);
        cfg.validate().unwrap();
    }

    #[test]
    fn overrides_win_and_errors_name_the_key() {
        let o = Overrides {
            server: Some("127.0.0.1:5347".into()),
            domain: Some("pubsub.localhost".into()),
            secret: Some("s3cret".into()),
            data_dir: Some("./d".into()),
            ..Default::default()
        };
        let cfg = Config::load(&o).unwrap();
        assert_eq!(cfg.component.secret, "s3cret");
        assert!(!cfg.to_masked_toml().contains("s3cret"));
        assert!(cfg.to_masked_toml().contains("********"));

        let bad = Overrides {
            server: Some("nope".into()),
            domain: Some("a@b".into()),
            ..Default::default()
        };
        let err = Config::load(&bad).unwrap_err().to_string();
        assert!(err.contains("--server"), "{err}");
        assert!(err.contains("--domain"), "{err}");
        assert!(err.contains("--secret"), "{err}");
    }

    /// `[pep] servers` are compared with the domains of prepared JIDs (RFC 6122 section 2.2,
    /// nameprep): a server written `LocalHost` is the one whose users arrive as `@localhost`.
    #[test]
    fn pep_servers_are_prepared() {
        let mut cfg = Config::default();
        cfg.pep.servers = vec!["LocalHost".into(), "Example.ORG.".into()];
        assert_eq!(cfg.pep_servers(), vec!["localhost", "example.org"]);
        cfg.pep.servers = vec!["user@example.org".into()];
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("pep.servers"), "{err}");
    }

    /// S3 and DynamoDB may be different servers; `endpoint` is the shorthand for both.
    #[test]
    fn each_aws_service_has_its_endpoint() {
        let cfg: Config = toml::from_str(
            "[storage.aws]\nendpoint = 'http://127.0.0.1:5000'\ndynamodb_endpoint = 'http://127.0.0.1:8000'\n",
        )
        .unwrap();
        assert_eq!(
            cfg.storage.aws.dynamodb_endpoint(),
            Some("http://127.0.0.1:8000")
        );
        assert_eq!(cfg.storage.aws.s3_endpoint(), Some("http://127.0.0.1:5000"));
        let bad: Config =
            toml::from_str("[storage.aws]\ns3_endpoint = '127.0.0.1:9000'\n").unwrap();
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("storage.aws.s3_endpoint"), "{err}");
    }

    /// `stratus storage init` and `restore` need no component secret (nor a domain).
    #[test]
    fn storage_commands_need_only_storage_settings() {
        let o = Overrides::default();
        assert!(Config::load(&o).is_err(), "the component needs its secret");
        let cfg = Config::load_storage(&o).unwrap();
        assert_eq!(cfg.storage.backend, StorageBackend::Embedded);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "[storage.aws]\ntable = ''\n").unwrap();
        let o = Overrides {
            config: Some(path),
            ..Default::default()
        };
        let err = Config::load_storage(&o).unwrap_err().to_string();
        assert!(err.contains("storage.aws.table"), "{err}");
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = toml::from_str::<Config>("[component]\nsecrte = 'x'\n").unwrap_err();
        assert!(err.to_string().contains("secrte"));
    }
}
