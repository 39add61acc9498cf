//! `bench-app`: the application side of the authentication benchmarks, on 127.0.0.1.
//!
//! It plays an identity provider and an application backend at once: it publishes a JWKS (the fixed RS256 test key
//! of `livestore-testkit`), mints a long-lived RS256 token for it, and answers the connect, push and pull hooks of
//! `[hooks]`, each after checking the `X-Livestore-Signature` HMAC the way a real backend must (a wrong signature
//! is a 401). Prints one JSON line on start: `{"url", "jwksUrl", "rs256Token"}`; runs until killed.
//!
//!     bench-app --port 0 --secret <hooks secret>

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use clap::Parser;
use hmac::{Hmac, KeyInit, Mac};
use livestore_testkit::jwt::{TestKey, jwks, unix_now};
use serde_json::json;
use sha2::Sha256;

#[derive(Debug, Parser)]
struct Args {
    /// Port on 127.0.0.1 (0: any free one).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The `[hooks] secret` the server signs hook calls with.
    #[arg(long)]
    secret: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port))).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let secret: Arc<[u8]> = args.secret.into_bytes().into();
    let document = jwks(&[TestKey::Rsa1]);
    let app = Router::new()
        .route("/jwks.json", get(move || std::future::ready(document.clone())))
        .route("/connect", post(allow))
        .route("/push", post(allow))
        .route("/pull", post(allow))
        .with_state(secret);
    let token = TestKey::Rsa1.sign(&json!({
        "sub": "bench",
        "storeIds": "*",
        "exp": unix_now() + 24 * 3600,
    }));
    println!(
        "{}",
        json!({ "url": url, "jwksUrl": format!("{url}/jwks.json"), "rs256Token": token })
    );
    axum::serve(listener, app).await?;
    Ok(())
}

/// Allows after checking the call's signature.
async fn allow(
    State(secret): State<Arc<[u8]>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let mut mac = Hmac::<Sha256>::new_from_slice(&secret).expect("any key length works for HMAC");
    mac.update(&body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let given = headers.get("x-livestore-signature").and_then(|value| value.to_str().ok());
    if given != Some(expected.as_str()) {
        return (StatusCode::UNAUTHORIZED, json!({ "error": "bad signature" }).to_string());
    }
    (StatusCode::OK, json!({ "allow": true }).to_string())
}
