//! Integration tests of livestore-objects over real loopback HTTP.
//!
//! - `harness`: starts the router on 127.0.0.1:0, and s3s-fs when available.
//! - `signer_api`: the signer contract and every bad-input case (status and message).
//! - `conformance`: one suite of presigned round trips and refusals, run
//!   against the embedded store and against s3s-fs (an independent S3 server).
//! - `store_protocol`: embedded-store specifics (header auth, ranges, CORS,
//!   crash safety of interrupted uploads, restarts).

mod conformance;
mod harness;
mod signer_api;
mod store_protocol;
