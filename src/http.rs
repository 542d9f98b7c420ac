//! The operator's HTTP listener (`[http] listen`): `GET /metrics` in the Prometheus/OpenMetrics
//! text format and `GET /health`: 200 when the component stream is up and storage answers, 503
//! with the reason otherwise. HTTP/1.1 by hyper; a bounded number of connections, each with a
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
}

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
        (&Method::GET, "/admin/backup") => backup(&req, &state).await,
        (_, "/metrics" | "/health" | "/admin/backup") => {
            text(StatusCode::METHOD_NOT_ALLOWED, plain, "GET only\n".into())
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

/// `GET /admin/backup`: a consistent snapshot of the store (`stratus backup`).
async fn backup(req: &Request<Incoming>, state: &State) -> Response<Full<Bytes>> {
    let plain = "text/plain; charset=utf-8";
    let Some(token) = &state.admin_token else {
        return text(
            StatusCode::NOT_FOUND,
            plain,
            "admin endpoints are off: set [admin] token\n".into(),
        );
    };
    if !authorized(req, token) {
        return text(
            StatusCode::UNAUTHORIZED,
            plain,
            "the [admin] token is required (Authorization: Bearer)\n".into(),
        );
    }
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

/// `stratus backup`: fetches `/admin/backup` from a running instance at `addr`.
pub async fn fetch_backup(addr: &str, token: &str) -> Result<Vec<u8>, String> {
    use http_body_util::{BodyExt, Empty};
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot reach stratus at {addr} ([http] listen): {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::get("/admin/backup")
        .header(hyper::header::HOST, addr)
        .header(hyper::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
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
