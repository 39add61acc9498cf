//! Request bodies: room in the memory budget before a byte is read, and a clock while they arrive.
//!
//! A middleware in front of every route. A request that carries a body first reserves its bytes in the memory
//! budget (its `Content-Length`, at most the largest body a route buffers; a fixed share for streamed uploads); when
//! the budget is full it gets 503 with `Retry-After` before anything is read. The body is then wrapped in a
//! [`TimedBody`]: a buffered body (sync transport, signer, S3 `CompleteMultipartUpload`) must arrive whole within
//! `body_read_timeout_seconds`; a streamed upload (S3 `PUT`, to disk in 1 MiB chunks) may not go that long without
//! a byte. A late body fails with an `io::ErrorKind::TimedOut` error, which handlers answer with 408 (S3:
//! `RequestTimeout`). The reservation is given back when the body is dropped: at once for a request refused
//! before its body was read (a wrong credential), when reading ends otherwise.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::budget::{MemoryBudget, Reservation};
use crate::http_error::{HttpError, Surface};
use crate::metrics::{LimitHit, Metrics, ShedResource};

/// What a streamed upload holds in memory at most while it is written to disk (a few 1 MiB chunks).
const STREAMED_BODY_BYTES: u64 = 4 * 1024 * 1024;

/// The middleware's settings.
#[derive(Debug, Clone)]
pub(crate) struct BodyGuard {
    pub(crate) budget: Arc<MemoryBudget>,
    pub(crate) metrics: Arc<Metrics>,
    /// The largest body any route buffers.
    pub(crate) max_buffered_bytes: u64,
    pub(crate) timeout: Duration,
}

/// Reserves and times the request's body, or answers 503 when the budget has no room for it.
pub(crate) async fn guard_bodies(
    State(guard): State<BodyGuard>,
    request: Request,
    next: Next,
) -> Response {
    let hint = request.body().size_hint();
    if hint.exact() == Some(0) {
        return next.run(request).await;
    }
    let streamed = request.method() == Method::PUT && request.uri().path().starts_with("/s3/");
    let bytes = if streamed {
        STREAMED_BODY_BYTES
    } else {
        hint.upper().unwrap_or(guard.max_buffered_bytes).min(guard.max_buffered_bytes)
    };
    let Some(reservation) = guard.budget.try_reserve(bytes, ShedResource::RequestBody) else {
        return HttpError::OverBudget(Surface::of(request.uri().path())).into_response();
    };
    let timing = if streamed { Timing::Idle(guard.timeout) } else { Timing::Total };
    let (parts, body) = request.into_parts();
    let body = TimedBody {
        inner: body,
        deadline: Box::pin(tokio::time::sleep_until(Instant::now() + guard.timeout)),
        timing,
        metrics: guard.metrics.clone(),
        _reservation: reservation,
    };
    next.run(Request::from_parts(parts, Body::new(body))).await
}

/// How a body's deadline moves.
#[derive(Debug, Clone, Copy)]
enum Timing {
    /// The whole body by the deadline.
    Total,
    /// A frame at least this often.
    Idle(Duration),
}

/// A request body with a deadline and its memory reservation.
struct TimedBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    timing: Timing,
    metrics: Arc<Metrics>,
    _reservation: Reservation,
}

/// Whether `error` (a body read failure as handlers see it) is this module's timeout.
pub(crate) fn is_body_timeout(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if error.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::TimedOut)
        {
            return true;
        }
        source = error.source();
    }
    false
}

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(context) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Timing::Idle(timeout) = this.timing {
                    this.deadline.as_mut().reset(Instant::now() + timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                if this.deadline.as_mut().poll(context).is_ready() {
                    this.metrics.limit_hit(LimitHit::BodyTimeout);
                    let error = io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the request body did not arrive within the body read timeout",
                    );
                    return Poll::Ready(Some(Err(axum::Error::new(error))));
                }
                Poll::Pending
            }
            done => done,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
