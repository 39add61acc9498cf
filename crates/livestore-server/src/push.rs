//! Turning a push's outcome into its `Exit` frame, and asking the push hook, for both transports.

use livestore_proto::admission::Admission;
use livestore_proto::encode;

use crate::error::ServerError;
use crate::hooks::{Decision, HookKind, Verdict, guarded};
use crate::metrics::{Metrics, RejectReason};
use crate::storage::AppendOutcome;

/// The `Exit` frame that answers push `request_id`.
pub(crate) fn push_reply(
    request_id: &str,
    result: Result<AppendOutcome, ServerError>,
    metrics: &Metrics,
) -> String {
    match result {
        Ok(AppendOutcome::Appended { .. } | AppendOutcome::Unchanged(Admission::Empty)) => {
            encode::exit_success_value(request_id, encode::PUSH_ACK_VALUE)
        }
        Ok(AppendOutcome::Unchanged(Admission::ServerAhead { head, provided_parent })) => {
            metrics.push_rejected(RejectReason::ServerAhead);
            encode::exit_fail(request_id, &encode::server_ahead_error(head, provided_parent))
        }
        Ok(AppendOutcome::Unchanged(Admission::Accept)) => {
            // A backend that admitted a batch without appending it would lose it if we acknowledged: refuse, so the
            // client keeps the batch and retries.
            metrics.push_rejected(RejectReason::StorageError);
            tracing::error!("storage admitted a push but did not append it; the client will retry");
            encode::exit_fail(
                request_id,
                &encode::unknown_error("storage error: the batch was not appended"),
            )
        }
        Ok(AppendOutcome::Unchanged(Admission::BackendIdMismatch { expected, received })) => {
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

/// Asks the push hook about a batch, if there is one. Empty batches are not asked about: the reference server
/// acknowledges them before its `onPush` runs.
pub(crate) async fn ask_push_hook(
    state: &crate::state::AppState,
    store_id: &str,
    identity: &crate::identity::Identity,
    batch: &[livestore_proto::event::EncodedEvent],
) -> Verdict {
    let hooks = state.auth.hooks();
    if !hooks.wants_push() || batch.is_empty() {
        return Verdict::Proceed;
    }
    let request = crate::hooks::PushRequest { store_id, identity, batch };
    let verdict = match guarded(HookKind::Push, hooks.push(request)).await {
        Ok(Decision::Allow) => Verdict::Proceed,
        Ok(Decision::Deny { reason }) => {
            Verdict::Refused(encode::unknown_error(&format!("push refused: {reason}")))
        }
        Err(error) if state.hooks_fail_open => {
            tracing::warn!(%error, "push hook failed; admitting the batch (hooks.fail_open)");
            Verdict::Proceed
        }
        Err(error) => {
            tracing::warn!(%error, "push hook failed; refusing the batch (the client retries)");
            Verdict::Undecided(encode::unknown_error(
                "push not admitted: the server cannot decide about it right now",
            ))
        }
    };
    if verdict != Verdict::Proceed {
        state.metrics.push_rejected(RejectReason::Hook);
    }
    verdict
}
