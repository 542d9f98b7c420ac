//! The operator's HTTP listener (`[http] listen`): `GET /metrics` in the Prometheus/OpenMetrics
//! text format and `GET /health`: 200 when the component stream is up and storage answers, 503
//! with the reason otherwise; with `[admin] token`, `GET /admin/backup` (`stratus backup`) and
//! `POST /admin/command/NAME` (`stratus admin`: the administrators' ad-hoc commands, run as the
//! service itself, fields as a JSON object, the answer in JSON). HTTP/1.1 by hyper; a bounded number of connections, each with a
//! header deadline, so a slow or hostile client cannot hold the listener.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use crate::component::Outbox;
use crate::metrics::metrics;
use crate::pubsub::model::ServiceId;
use crate::storage::Store;

/// Connections served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 32;
/// Longest a storage check may take before /health says storage does not answer.
const STORAGE_DEADLINE: Duration = Duration::from_secs(2);

/// What /metrics and /health look at.
pub struct State {
    pub outbox: Outbox,
    pub store: Arc<dyn Store>,
    /// The bearer token of the admin endpoints (`[admin] token`); none: they are off.
    pub admin_token: Option<String>,
    /// The stanza handler the admin commands run in.
    pub service: Arc<crate::xmpp::Service>,
}

/// Largest body of an admin command (its fields).
const MAX_COMMAND_BYTES: usize = 64 * 1024;

/// Binds `addr` (before the component connects, so a bad address fails the start).
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    info!(
        "metrics and health on http://{}/metrics, /health",
        listener.local_addr()?
    );
    Ok(listener)
}

/// Serves until the task is dropped.
pub async fn serve(listener: TcpListener, state: Arc<State>) {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                warn!("http listener: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| answer(req, state.clone()));
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(permit);
        });
    }
}

fn text(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

async fn answer(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let plain = "text/plain; charset=utf-8";
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let m = metrics();
            m.outbound_queue_stanzas.set(state.outbox.queued() as i64);
            m.outbound_queue_bytes
                .set(state.outbox.queued_bytes() as i64);
            text(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                m.render(),
            )
        }
        (&Method::GET, "/health") => match health(&state).await {
            Ok(()) => text(StatusCode::OK, plain, "ok\n".into()),
            Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, plain, format!("{why}\n")),
        },
        (&Method::GET, "/admin/backup") => match admin_allowed(&req, &state) {
            Ok(()) => backup(&state).await,
            Err(refused) => refused,
        },
        (_, "/metrics" | "/health" | "/admin/backup") => {
            text(StatusCode::METHOD_NOT_ALLOWED, plain, "GET only\n".into())
        }
        (&Method::POST, path) if path.starts_with("/admin/command/") => {
            match admin_allowed(&req, &state) {
                Ok(()) => {
                    let name = path["/admin/command/".len()..].to_owned();
                    command(req, &name, &state).await
                }
                Err(refused) => refused,
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            plain,
            "not found: /metrics and /health are served\n".into(),
        ),
    })
}

/// True when the request carries the admin token (compared in constant time).
fn authorized(req: &Request<Incoming>, token: &str) -> bool {
    let Some(given) = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Refuses an admin request without the configured token (or when there is none).
#[allow(clippy::result_large_err)] // built once per refused admin request, never on a hot path
fn admin_allowed(req: &Request<Incoming>, state: &State) -> Result<(), Response<Full<Bytes>>> {
    let plain = "text/plain; charset=utf-8";
    let Some(token) = &state.admin_token else {
        return Err(text(
            StatusCode::NOT_FOUND,
            plain,
            "admin endpoints are off: set [admin] token\n".into(),
        ));
    };
    if !authorized(req, token) {
        return Err(text(
            StatusCode::UNAUTHORIZED,
            plain,
            "the [admin] token is required (Authorization: Bearer)\n".into(),
        ));
    }
    Ok(())
}

/// `POST /admin/command/NAME`: an administrators' command with the fields of the JSON object in
/// the body (each a string or a list of strings).
async fn command(req: Request<Incoming>, name: &str, state: &State) -> Response<Full<Bytes>> {
    use http_body_util::{BodyExt, Limited};
    let json_type = "application/json";
    let refuse = |status: StatusCode, condition: &str, why: String| {
        let body = serde_json::json!({ "error": condition, "text": why });
        text(status, json_type, body.to_string())
    };
    let body = match Limited::new(req.into_body(), MAX_COMMAND_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "bad-request",
                format!("body unreadable or over {MAX_COMMAND_BYTES} bytes: {e}"),
            );
        }
    };
    let fields = match command_fields(&body) {
        Ok(f) => f,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, "bad-request", why),
    };
    match state
        .service
        .admin_command(name, fields, &state.outbox)
        .await
    {
        Ok(answer) => text(StatusCode::OK, json_type, answer.to_string()),
        Err(e) => {
            let status = match e.condition {
                "bad-request" | "jid-malformed" | "not-acceptable" => StatusCode::BAD_REQUEST,
                "forbidden" | "not-allowed" => StatusCode::FORBIDDEN,
                "item-not-found" => StatusCode::NOT_FOUND,
                "conflict" => StatusCode::CONFLICT,
                "feature-not-implemented" => StatusCode::NOT_IMPLEMENTED,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            refuse(status, e.condition, e.text.unwrap_or_default())
        }
    }
}

/// The fields of a command: an empty body or a JSON object of strings or lists of strings.
fn command_fields(body: &[u8]) -> Result<crate::xmpp::forms::Fields, String> {
    use serde_json::Value;
    let mut fields = crate::xmpp::forms::Fields::new();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(fields);
    }
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return Err("the body must be a JSON object of fields".into());
    };
    for (var, v) in map {
        let values = match v {
            Value::String(s) => vec![s],
            Value::Array(list) => list
                .into_iter()
                .map(|x| match x {
                    Value::String(s) => Ok(s),
                    _ => Err(format!("field {var}: values must be strings")),
                })
                .collect::<Result<_, _>>()?,
            _ => return Err(format!("field {var}: a string or a list of strings")),
        };
        fields.insert(var, values);
    }
    Ok(fields)
}

/// `GET /admin/backup`: a consistent snapshot of the store (`stratus backup`).
async fn backup(state: &State) -> Response<Full<Bytes>> {
    let plain = "text/plain; charset=utf-8";
    match state.store.snapshot().await {
        Ok(Some(bytes)) => {
            info!("backup of {} bytes taken", bytes.len());
            text(StatusCode::OK, plain, String::new()).map(|_| Full::new(Bytes::from(bytes)))
        }
        Ok(None) => text(
            StatusCode::NOT_IMPLEMENTED,
            plain,
            "this storage backend is not backed up through stratus: see docs/operations.md\n"
                .into(),
        ),
        Err(e) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            plain,
            format!("backup failed: {e}\n"),
        ),
    }
}

/// One request to the admin endpoints of a running instance at `addr`: the status and body.
async fn admin_request(
    addr: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, Bytes), String> {
    use http_body_util::BodyExt;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot reach stratus at {addr} ([http] listen): {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// `stratus admin NAME var=value...`: runs an administrators' command on the running instance;
/// its JSON answer, or the error it gave.
pub async fn run_admin_command(
    addr: &str,
    token: &str,
    name: &str,
    fields: &serde_json::Map<String, serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let body = serde_json::to_vec(fields).map_err(|e| e.to_string())?;
    let path = format!("/admin/command/{name}");
    let (status, body) = admin_request(addr, token, Method::POST, &path, body).await?;
    let answer = serde_json::from_slice::<serde_json::Value>(&body);
    match (status, answer) {
        (StatusCode::OK, Ok(v)) => Ok(v),
        (_, Ok(v)) if v.get("error").is_some() => Err(format!(
            "{status}: {} {}",
            v["error"].as_str().unwrap_or_default(),
            v["text"].as_str().unwrap_or_default()
        )),
        _ => Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body).trim()
        )),
    }
}

/// `stratus backup`: fetches `/admin/backup` from a running instance at `addr`.
pub async fn fetch_backup(addr: &str, token: &str) -> Result<Vec<u8>, String> {
    let (status, body) =
        admin_request(addr, token, Method::GET, "/admin/backup", Vec::new()).await?;
    if status != StatusCode::OK {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    Ok(body.to_vec())
}

async fn health(state: &State) -> Result<(), String> {
    if metrics().connected.get() == 0 {
        return Err("the component stream to the server is down".into());
    }
    match tokio::time::timeout(
        STORAGE_DEADLINE,
        state.store.node_names(&ServiceId::Host, None, 1),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("storage does not answer: {e}")),
        Err(_) => Err(format!(
            "storage does not answer within {STORAGE_DEADLINE:?}"
        )),
    }
}
