//! Progress bars for `livestore files sync`: one bar per running transfer (bytes), plus a summary line.
//!
//! Bars draw on stderr and only when it is a terminal (indicatif hides them otherwise), so scripts and `--json`
//! output stay clean.

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use livestore_files::{SyncStatus, TransferKind};

/// The bars of one command run.
pub(crate) struct Bars {
    multi: Option<MultiProgress>,
    summary: Option<ProgressBar>,
    transfers: Mutex<HashMap<(TransferKind, String), ProgressBar>>,
}

impl Bars {
    /// Bars on stderr when `enabled` (and stderr is a terminal); no-ops otherwise.
    pub(crate) fn new(enabled: bool) -> Bars {
        if !enabled || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            return Bars { multi: None, summary: None, transfers: Mutex::new(HashMap::new()) };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let summary = multi.add(ProgressBar::new_spinner());
        summary
            .set_style(ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"));
        Bars { multi: Some(multi), summary: Some(summary), transfers: Mutex::new(HashMap::new()) }
    }

    /// Redraws from a status snapshot: adds bars for new transfers, updates bytes, removes finished ones.
    pub(crate) fn update(&self, status: &SyncStatus) {
        let (Some(multi), Some(summary)) = (&self.multi, &self.summary) else { return };
        summary.set_message(format!(
            "uploads {} running / {} waiting, downloads {} running / {} waiting, {} errors{}",
            status.uploading_count,
            status.queued_upload_count,
            status.downloading_count,
            status.queued_download_count,
            status.error_count,
            if status.online { "" } else { " (offline)" }
        ));
        summary.tick();
        let mut transfers = self.transfers.lock().expect("bars lock");
        let live: Vec<(TransferKind, String)> = status
            .transfers
            .iter()
            .map(|transfer| (transfer.kind, transfer.file_id.clone()))
            .collect();
        transfers.retain(|key, bar| {
            let keep = live.contains(key);
            if !keep {
                bar.finish_and_clear();
                multi.remove(bar);
            }
            keep
        });
        for transfer in &status.transfers {
            let bar =
                transfers.entry((transfer.kind, transfer.file_id.clone())).or_insert_with(|| {
                    let bar = multi.add(ProgressBar::new(transfer.total));
                    bar.set_style(
                    ProgressStyle::with_template(
                        "{prefix:>9} {msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
                    )
                    .expect("a valid template")
                    .progress_chars("=> "),
                );
                    bar.set_prefix(match transfer.kind {
                        TransferKind::Upload => "upload",
                        TransferKind::Download => "download",
                    });
                    bar.set_message(transfer.file_id.chars().take(8).collect::<String>());
                    bar
                });
            bar.set_length(transfer.total.max(transfer.loaded));
            bar.set_position(transfer.loaded);
        }
    }

    /// Clears everything.
    pub(crate) fn finish(&self) {
        for (_, bar) in self.transfers.lock().expect("bars lock").drain() {
            bar.finish_and_clear();
        }
        if let Some(summary) = &self.summary {
            summary.finish_and_clear();
        }
    }
}
