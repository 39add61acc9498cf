//! Turning a push's outcome into its `Exit` frame, and asking the push hook, for both transports.

use livestore_proto::encode;

use crate::error::ServerError;
use crate::metrics::{Metrics, RejectReason};
use crate::storage::AppendOutcome;

/// The `Exit` frame that answers push `request_id`.
pub(crate) fn push_reply(
    request_id: &str,
    result: Result<AppendOutcome, ServerError>,
    metrics: &Metrics,
) -> String {
    match result {
        Ok(AppendOutcome::Appended { .. } | AppendOutcome::Empty) => {
            encode::exit_success_value(request_id, encode::PUSH_ACK_VALUE)
        }
        Ok(AppendOutcome::ServerAhead { head, provided_parent }) => {
            metrics.push_rejected(RejectReason::ServerAhead);
            encode::exit_fail(request_id, &encode::server_ahead_error(head, provided_parent))
        }
        Ok(AppendOutcome::BackendIdMismatch { expected, received }) => {
            metrics.push_rejected(RejectReason::BackendIdMismatch);
            encode::exit_fail(request_id, &encode::backend_id_mismatch_error(&expected, &received))
        }
        Err(error) => {
            metrics.push_rejected(RejectReason::StorageError);
            tracing::error!(%error, "push failed in storage; the client will retry");
            encode::exit_fail(
                request_id,
                &encode::unknown_error(&format!("storage error: {error}")),
            )
        }
    }
}

/// Asks the push hook about a batch, if there is one; `Some(error)` is the `UnknownError` to answer with when the
/// batch must not be written (refused, or the hook failed and `fail_open` is off).
pub(crate) async fn ask_push_hook(
    state: &crate::app::AppState,
    store_id: &str,
    identity: &crate::auth::Identity,
    batch: &[livestore_proto::event::EncodedEvent],
) -> Option<String> {
    let hooks = state.auth.hooks();
    if !hooks.wants_push() {
        return None;
    }
    let request = crate::hooks::PushRequest { store_id, identity, batch };
    match hooks.push(request).await {
        Ok(crate::hooks::Decision::Allow) => None,
        Ok(crate::hooks::Decision::Deny { reason }) => {
            metrics_refused(state);
            Some(encode::unknown_error(&format!("push refused: {reason}")))
        }
        Err(error) if state.hooks_fail_open => {
            tracing::warn!(%error, "push hook failed; admitting the batch (hooks.fail_open)");
            None
        }
        Err(error) => {
            tracing::warn!(%error, "push hook failed; refusing the batch (the client retries)");
            metrics_refused(state);
            Some(encode::unknown_error(
                "push not admitted: the server cannot decide about it right now",
            ))
        }
    }
}

fn metrics_refused(state: &crate::app::AppState) {
    state.metrics.push_rejected(RejectReason::Hook);
}
