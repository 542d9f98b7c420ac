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
        (_, "/metrics" | "/health") => {
            text(StatusCode::METHOD_NOT_ALLOWED, plain, "GET only\n".into())
        }
        _ => text(
            StatusCode::NOT_FOUND,
            plain,
            "not found: /metrics and /health are served\n".into(),
        ),
    })
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
