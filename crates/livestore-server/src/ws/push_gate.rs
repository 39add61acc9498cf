//! The push hook on a WebSocket connection: hook calls overlap, submissions keep the arrival order.
//!
//! A client may pipeline pushes, and storage admits them in the order they are submitted, so the hook must not
//! reorder them. The gate takes pushes in arrival order, asks the hook about up to `concurrency` of them at once
//! (`buffered`), and in arrival order either submits each allowed batch to storage or hands the replier the
//! refusal of a denied one, which is never written. Every push leaves with a [`PendingPush`], so each gets its reply
//! and its registration in `ack_order` is finished by that reply: none is left hanging.
//!
//! The reader registers each push in `ack_order` before handing it here, so its echo cannot overtake its reply
//! whatever the hook says. This module decides nothing itself: `push::ask_push_hook` asks, storage admits.

use std::sync::Arc;

use futures_util::StreamExt;
use livestore_proto::rpc::PushArgs;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::{PendingPush, PushHold, PushOutcome};
use crate::identity::Identity;
use crate::state::AppState;

/// A push waiting for the hook: what the reader checked and registered.
pub(super) struct GatedPush {
    pub(super) request_id: String,
    pub(super) token: Option<u64>,
    pub(super) args: PushArgs,
    pub(super) hold: PushHold,
}

/// What each hook call needs, shared by the calls in flight.
struct Context {
    state: AppState,
    store_id: Arc<str>,
    identity: Arc<Identity>,
}

/// Starts the gate; pushes sent to the returned sender reach `submitted` in the order they were sent. The task ends
/// once the sender is dropped and every push it holds has left.
pub(super) fn start(
    state: AppState,
    store_id: Arc<str>,
    identity: Arc<Identity>,
    submitted: UnboundedSender<PendingPush>,
    concurrency: usize,
) -> UnboundedSender<GatedPush> {
    let (sender, receiver) = unbounded_channel();
    let context = Arc::new(Context { state, store_id, identity });
    tokio::spawn(run(context, receiver, submitted, concurrency.max(1)));
    sender
}

async fn run(
    context: Arc<Context>,
    pushes: UnboundedReceiver<GatedPush>,
    submitted: UnboundedSender<PendingPush>,
    concurrency: usize,
) {
    // The reader's push slots (`limits.max_pushes_in_flight`) bound what can wait in the channel.
    let arrivals = futures_util::stream::unfold(pushes, |mut pushes| async move {
        pushes.recv().await.map(|push| (push, pushes))
    });
    let decided = arrivals
        .map(|push| {
            let context = context.clone();
            async move {
                let verdict = crate::push::ask_push_hook(
                    &context.state,
                    &context.store_id,
                    &context.identity,
                    &push.args.batch,
                )
                .await;
                (push, verdict)
            }
        })
        .buffered(concurrency);
    futures_util::pin_mut!(decided);
    while let Some((push, verdict)) = decided.next().await {
        let GatedPush { request_id, token, args, hold } = push;
        let outcome = match verdict.refusal() {
            None => PushOutcome::Storage(context.state.storage.append(&context.store_id, args)),
            Some(error) => PushOutcome::Refused(error),
        };
        // The replier outlives this task (it waits for this sender too), so this only fails if it panicked.
        let _ = submitted.send(PendingPush { request_id, token, outcome, _hold: hold });
    }
}
