//! The accept loop of one listener, with the limits a server facing the network needs (issue
//! 11): at most `connection_limit` connections open at once (more wait in the kernel's accept
//! queue), a request head must arrive within `header_read_timeout` of the connection being
//! accepted or of the first byte of the next request (trickling bytes does not extend it), and
//! a keep-alive connection idle for `idle_timeout` after a response is closed.
//!
//! `axum::serve` has none of these: hyper's own header timeout needs a timer that axum does not
//! set, and hyper counts idle keep-alive time as header time, which would force one value for
//! both. Requests reach the router unchanged; body and response timeouts are the handlers'
//! (`body_read_timeout`, `default_response_timeout`). This module must not look inside requests.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::ServiceExt;

/// Per-listener connection limits, from [`super::ServeSettings`].
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub limit: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` turns true, then stops accepting, asks open
/// connections to finish their request and close, and returns once they have.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.limit.max(1)));
    // Each connection task holds a receiver; `closed()` resolves when the last one ends.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            _ = stopped(&mut stop) => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        tokio::spawn(connection(
            stream,
            peer,
            router.clone(),
            limits,
            stop.clone(),
            (slot, open_rx.clone()),
        ));
    }
    drop(open_rx);
    drop(listener);
    open_tx.closed().await;
}

/// Resolves once `stop` is true (or its sender is gone); holds no borrow of the value.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Where a connection is between requests.
#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request head since then.
    Head(Instant),
    /// This many requests are being handled.
    Busy(usize),
    /// The last response ended, or its bytes last moved, then.
    Idle(Instant),
}

/// The phase of one connection, moved by its I/O and its requests.
#[derive(Debug)]
struct Activity(Mutex<Phase>);

impl Activity {
    fn update(&self, f: impl FnOnce(Phase) -> Phase) {
        let mut phase = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *phase = f(*phase);
    }

    /// Bytes arrived: after a response they start the next head's clock.
    fn read(&self) {
        self.update(|p| match p {
            Phase::Idle(_) => Phase::Head(Instant::now()),
            other => other,
        });
    }

    /// Response bytes left: the connection is not idle while they still flow.
    fn wrote(&self) {
        self.update(|p| match p {
            Phase::Idle(_) => Phase::Idle(Instant::now()),
            other => other,
        });
    }

    fn begin(&self) {
        self.update(|p| match p {
            Phase::Busy(n) => Phase::Busy(n + 1),
            _ => Phase::Busy(1),
        });
    }

    fn end(&self) {
        self.update(|p| match p {
            Phase::Busy(n) if n > 1 => Phase::Busy(n - 1),
            _ => Phase::Idle(Instant::now()),
        });
    }

    /// The limit this connection has run past, if any.
    fn expired(&self, limits: &ConnectionLimits, now: Instant) -> Option<&'static str> {
        let phase = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        match phase {
            Phase::Head(t) if now >= t + limits.header_read_timeout => Some("header_read_timeout"),
            Phase::Idle(t) if now >= t + limits.idle_timeout => Some("idle_timeout"),
            _ => None,
        }
    }
}

/// Ends a request's busy phase when its response is ready, or when the request is dropped.
struct BusyGuard(Arc<Activity>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.end();
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
    _held: (OwnedSemaphorePermit, watch::Receiver<()>),
) {
    let activity = Arc::new(Activity(Mutex::new(Phase::Head(Instant::now()))));
    let io = TokioIo::new(Tracked {
        inner: stream,
        activity: activity.clone(),
    });
    let service = {
        let activity = activity.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            activity.begin();
            let guard = BusyGuard(activity.clone());
            let router = router.clone();
            async move {
                let _guard = guard;
                router.oneshot(req.map(Body::new)).await
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new().serve_connection(io, service);
    tokio::pin!(conn);
    // Checks every quarter of the shorter timeout, so a limit is enforced within 125% of it.
    let tick =
        (limits.header_read_timeout.min(limits.idle_timeout) / 4).max(Duration::from_millis(50));
    let mut check = tokio::time::interval_at(Instant::now() + tick, tick);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stopped(&mut stop), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = check.tick() => {
                if let Some(key) = activity.expired(&limits, Instant::now()) {
                    tracing::debug!(%peer, limit = key, "closing connection");
                    return;
                }
            }
        }
    }
}

/// A TCP stream that reports its reads and writes to the connection's [`Activity`].
struct Tracked {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        r
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_choose_the_timeout() {
        let limits = ConnectionLimits {
            limit: 1,
            header_read_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
        };
        let s = Duration::from_secs;
        let t0 = Instant::now();
        let a = Activity(Mutex::new(Phase::Head(t0)));
        assert_eq!(a.expired(&limits, t0 + s(1)), None);
        assert_eq!(a.expired(&limits, t0 + s(3)), Some("header_read_timeout"));
        // A request in flight never expires here (the handler has its own timeouts).
        a.begin();
        assert_eq!(a.expired(&limits, t0 + s(600)), None);
        a.end();
        let t1 = Instant::now();
        assert_eq!(a.expired(&limits, t1 + s(9)), None);
        assert_eq!(a.expired(&limits, t1 + s(10)), Some("idle_timeout"));
        // The next request's first byte starts the shorter head clock; more bytes don't reset it.
        a.read();
        let t2 = Instant::now();
        a.read();
        a.wrote();
        assert_eq!(a.expired(&limits, t2 + s(2)), Some("header_read_timeout"));
    }
}
