//! Turning a push's outcome into its `Exit` frame, for both transports.

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
