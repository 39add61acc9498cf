//! `[hooks]` over HTTP: signed JSON calls to the application's backend.
//!
//! Work in progress on this branch: the calls themselves (signing, timeouts, bounded concurrency, the connect
//! cache, metrics) are not written yet; a configured hook URL refuses to start until they are.

use std::sync::Arc;

use super::SyncHooks;
use crate::config::HooksConfig;
use crate::metrics::Metrics;

/// The hooks of `[hooks]`.
#[derive(Debug)]
pub struct HttpHooks {
    _metrics: Arc<Metrics>,
}

impl HttpHooks {
    /// Hooks for the configured URLs; `None` when no connect, push or pull URL is set.
    pub(crate) fn new(
        config: &HooksConfig,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<HttpHooks>, String> {
        if config.connect_url.is_none() && config.push_url.is_none() && config.pull_url.is_none() {
            return Ok(None);
        }
        let _ = metrics;
        Err("hooks over HTTP are not available in this build yet".to_owned())
    }
}

impl SyncHooks for HttpHooks {}
