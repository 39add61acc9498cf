//! The non-memory half of the hardening review, against the real binary: who may call without auth (origins and
//! hosts), credentials that expire on open sockets, a static site around server state, range-checked settings,
//! config errors and logs that never show a secret, private files, `bearer` in any case, and JSON nesting.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::*;

const TOKEN: &str = "policy-static-token-0123456789abcdef";
const JWT_SECRET: &str = "policy-jwt-secret-0123456789abcdefgh";

fn jwt(expires_in: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"exp": now + expires_in, "storeIds": "*"}),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap()
}

/// The status of a WebSocket upgrade to `url` with extra request headers (101 when it is accepted).
async fn upgrade(url: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => 101,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(other) => panic!("unexpected error {other}"),
    }
}

/// Status and body of a request with extra headers (a `host` among them replaces the real one).
async fn request(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let mut builder = reqwest::Client::new().request(method, url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if let Some(body) = body {
        builder = builder.body(body.to_owned());
    }
    let response = builder.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

const PING: &str = r#"{"_tag":"Request","id":"1","tag":"SyncHttpRpc.Ping","payload":{"storeId":"o"},"headers":[]}"#;

/// Every kind of route, as `(what, method, path, body)`.
fn routes() -> Vec<(&'static str, reqwest::Method, &'static str, Option<&'static str>)> {
    use reqwest::Method;
    vec![
        ("health", Method::GET, "/healthz", None),
        ("metrics", Method::GET, "/metrics", None),
        ("sync HTTP transport", Method::POST, "/?storeId=o&transport=http", Some(PING)),
        ("signer", Method::POST, "/api/v1/sign/download", Some(r#"{"key":"o/x"}"#)),
        ("object store", Method::GET, "/s3/livestore-files/o/x", None),
        ("preflight", Method::OPTIONS, "/?storeId=o&transport=http", None),
    ]
}

#[tokio::test]
async fn without_auth_only_loopback_origins_and_hosts_are_served() {
    let server = TestServer::start();
    let base = server.http_url();
    let ws = server.ws_url("o");
    for (what, method, path, body) in routes() {
        let url = format!("{base}{path}");
        // A preflight is an OPTIONS request with this header; other requests go without it.
        let extra: &[(&str, &str)] =
            if what == "preflight" { &[("access-control-request-method", "POST")] } else { &[] };
        let send = |header: (&'static str, &'static str)| {
            let mut headers = extra.to_vec();
            headers.push(header);
            let (method, url) = (method.clone(), url.clone());
            async move { request(method, &url, &headers, body).await }
        };
        let (status, text) = send(("origin", "https://evil.example")).await;
        assert_eq!(status, 403, "{what} from a foreign origin: {text}");
        assert!(text.contains("origin may not call"), "{what}: {text}");
        let (status, text) = send(("host", "rebound.evil.example:8787")).await;
        assert_eq!(status, 403, "{what} for a foreign Host (DNS rebinding): {text}");
        assert!(text.contains("Host is not a loopback name"), "{what}: {text}");
        for origin in ["http://localhost:5173", "http://127.0.0.1:8787"] {
            let (status, text) = send(("origin", origin)).await;
            // Served (the object store then wants its signature, which is another matter).
            assert!(
                !text.contains("may not call") && !text.contains("loopback name"),
                "{what} from {origin}: {status} {text}"
            );
        }
    }
    assert_eq!(upgrade(&ws, &[("origin", "https://evil.example")]).await, 403);
    assert_eq!(upgrade(&ws, &[("host", "evil.example")]).await, 403);
    assert_eq!(upgrade(&ws, &[("origin", "http://localhost:3000")]).await, 101);
    assert_eq!(upgrade(&ws, &[]).await, 101, "non-browser clients send no Origin");
    let metrics = reqwest::get(format!("{base}/metrics")).await.unwrap().text().await.unwrap();
    assert!(metric_value(&metrics, "livestore_limit_hits_total{limit=\"origin\"}").unwrap() >= 7.0);
    assert!(metric_value(&metrics, "livestore_limit_hits_total{limit=\"host\"}").unwrap() >= 7.0);
    assert!(
        server.log().contains("browsers may call only from loopback origins"),
        "the startup warning says so"
    );

    // An explicit list adds origins; nothing else changes.
    let listed =
        TestServer::start_with_env(&[("LIVESTORE_ALLOWED_ORIGINS", "https://app.example.com")]);
    let url = format!("{}/?storeId=o&transport=http", listed.http_url());
    let (status, _) =
        request(reqwest::Method::POST, &url, &[("origin", "https://app.example.com")], Some(PING))
            .await;
    assert_eq!(status, 200);
    let (status, _) =
        request(reqwest::Method::POST, &url, &[("origin", "https://evil.example")], Some(PING))
            .await;
    assert_eq!(status, 403);
    assert_eq!(upgrade(&listed.ws_url("o"), &[("origin", "https://app.example.com")]).await, 101);
}

#[tokio::test]
async fn with_auth_an_origin_list_limits_browsers() {
    let config = format!(
        "[auth]\ntokens = [\"{TOKEN}\"]\n[cors]\nallowed_origins = [\"https://app.example.com\"]\n"
    );
    let (server, _dir) = server_with_config(&config, &[]);
    let url = format!("{}/?storeId=o&transport=http", server.http_url());
    let bearer = format!("Bearer {TOKEN}");
    for (origin, expected) in
        [(Some("https://app.example.com"), 200), (Some("https://evil.example"), 403), (None, 200)]
    {
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend(origin.map(|origin| ("origin", origin)));
        let (status, text) = request(reqwest::Method::POST, &url, &headers, Some(PING)).await;
        assert_eq!(status, expected, "{origin:?}: {text}");
    }
    // With auth, any Host: the server may sit behind a proxy under any name.
    let (status, _) = request(
        reqwest::Method::GET,
        &format!("{}/healthz", server.http_url()),
        &[("host", "sync.example.com")],
        None,
    )
    .await;
    assert_eq!(status, 200);
    // Without a list, any origin may call an authenticated server (the token is the credential).
    let open = TestServer::start_with_env(&[("LIVESTORE_AUTH_TOKENS", TOKEN)]);
    let url = format!("{}/?storeId=o&transport=http", open.http_url());
    let (status, _) = request(
        reqwest::Method::POST,
        &url,
        &[("authorization", &bearer), ("origin", "https://any.example")],
        Some(PING),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn an_expiring_jwt_stops_working_on_an_open_socket() {
    let config = format!("[auth]\njwt_secret = \"{JWT_SECRET}\"\njwt_leeway_seconds = 2\n");
    let (server, _dir) = server_with_config(&config, &[]);
    // Valid for 2 s, plus the configured 2 s leeway: refused from the 5th second on.
    let token = jwt(2);
    let url = format!("{}&payload={}", server.ws_url("expiring"), payload_param(&token));
    let mut client = WsClient::connect(&url).await;
    let connected = Instant::now();
    client.send(&pull_request("live", "expiring", true, None)).await;
    assert_eq!(client.frame().await["_tag"], "Chunk");
    client.send(&push_request("p1", "expiring", events(1, 1), None)).await;
    let mut tags = vec![client.frame().await["_tag"].clone(), client.frame().await["_tag"].clone()];
    tags.sort_by_key(Value::to_string);
    assert_eq!(tags, ["Chunk", "Exit"], "pushes work before the expiry");
    // The live pull does not end with an Exit: the socket closes at expiry, with 1008.
    // (The token is refused 5 s after it was made, within the client's 10 s frame timeout.)
    let code = client.close_code().await;
    let after = connected.elapsed();
    assert_eq!(code, Some(1008));
    assert!(after >= Duration::from_secs(3), "closed after {after:?}, before the token expired");
    assert_eq!(upgrade(&url, &[]).await, 401, "the expired token cannot reconnect");
    let metrics =
        reqwest::get(format!("{}/metrics", server.http_url())).await.unwrap().text().await.unwrap();
    assert_eq!(
        metric_value(&metrics, "livestore_limit_hits_total{limit=\"credential_expired\"}"),
        Some(1.0)
    );
    assert!(server.log().contains("its credential expired"));
    // Static tokens do not expire: such a socket stays open (the security suite holds idle sockets for longer).
}

/// Runs `livestore serve` with `args` (and a config file if given) and returns its failure output; panics if it
/// started.
fn refused_start(args: &[&str], config: Option<&str>, env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_livestore"));
    command.arg("serve").args(["--addr", "127.0.0.1:0"]).args(args);
    command
        .env_remove("LIVESTORE_AUTH_TOKENS")
        .env_remove("LIVESTORE_JWT_SECRET")
        .env_remove("LIVESTORE_CONFIG");
    if let Some(config) = config {
        let path = dir.path().join("livestore.toml");
        std::fs::write(&path, config).unwrap();
        command.env("LIVESTORE_CONFIG", &path);
    }
    if !args.contains(&"--data-dir") {
        command.arg("--data-dir").arg(dir.path().join("data"));
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let output = command.output().unwrap();
    assert!(!output.status.success(), "livestore serve {args:?} started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn a_static_dir_around_server_state_is_refused_and_state_files_are_never_served() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let site = root.path().join("site");
    std::fs::create_dir_all(data.join("objects")).unwrap();
    std::fs::create_dir_all(&site).unwrap();
    let path = |path: &Path| path.to_str().unwrap().to_owned();
    for (static_dir, problem) in [
        (path(root.path()), "contains the data dir"),
        (path(&data), "contains the data dir"),
        (path(&data.join("objects")), "lies inside the data dir"),
        (format!("{}/../data", path(&site)), "contains the data dir"),
    ] {
        let stderr =
            refused_start(&["--static-dir", &static_dir, "--data-dir", &path(&data)], None, &[]);
        assert!(stderr.contains(problem), "{static_dir}: {stderr}");
    }
    // The embedded object store kept elsewhere, and the config file, are protected too.
    let objects = site.join("objects");
    let config =
        format!("[files.backend]\nkind = \"embedded\"\ndata_dir = \"{}\"\n", objects.display());
    let stderr = refused_start(&["--static-dir", &path(&site)], Some(&config), &[]);
    assert!(stderr.contains("contains the embedded object store's directory"), "{stderr}");
    let config_in_site = site.join("livestore.toml");
    std::fs::write(&config_in_site, "").unwrap();
    let stderr = refused_start(
        &["--static-dir", &path(&site)],
        None,
        &[("LIVESTORE_CONFIG", &path(&config_in_site))],
    );
    assert!(stderr.contains("contains the config file"), "{stderr}");
    std::fs::remove_file(&config_in_site).unwrap();

    // A site that holds copies of server state, whatever their names, serves none of them.
    let server = TestServer::start();
    let mut sqlite = WsClient::connect(&server.ws_url("copied")).await;
    push_events(&mut sqlite, "copied", 0, 3, 3).await;
    let database = std::fs::read(server.data_dir().join("sync.sqlite3")).unwrap();
    std::fs::write(site.join("index.html"), "<h1>app</h1>").unwrap();
    std::fs::write(site.join("photo.png"), &database).unwrap();
    std::fs::write(site.join("sync.sqlite3-wal"), "wal").unwrap();
    std::fs::write(site.join("credentials.json"), "{}").unwrap();
    let site_server = TestServer::start_with(&[], &["--static-dir", &path(&site)]);
    for file in ["/photo.png", "/sync.sqlite3-wal", "/credentials.json"] {
        let response = reqwest::get(format!("{}{file}", site_server.http_url())).await.unwrap();
        assert_eq!(response.status(), 404, "{file} was served");
    }
    let index = reqwest::get(format!("{}/", site_server.http_url())).await.unwrap();
    assert_eq!(index.text().await.unwrap(), "<h1>app</h1>");
}

#[tokio::test]
async fn settings_are_range_checked_and_errors_never_echo_secrets() {
    for (config, problem) in [
        (
            "[limits]\noutbound_queue_frames = 0\n",
            "limits.outbound_queue_frames = 0 is out of range: allowed 16..=65536",
        ),
        (
            "[limits]\nheader_read_timeout_seconds = 9223372036854775807\n",
            "limits.header_read_timeout_seconds = 9223372036854775807 is out of range: allowed 1..=3600 s",
        ),
        ("[limits]\nmemory_budget_bytes = 1\n", "limits.memory_budget_bytes = 1 is out of range"),
        (
            "[limits]\nmax_pulls_per_connection = 0\n",
            "limits.max_pulls_per_connection = 0 is out of range: allowed 1..=10000",
        ),
        ("[cors]\nallowed_origins = [\"*\"]\n", "cors.allowed_origins: \"*\" is not an origin"),
    ] {
        let stderr = refused_start(&[], Some(config), &[]);
        assert!(stderr.contains(problem), "{config}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let spaces = " ".repeat(16);
    for (config, env, secret, problem) in [
        (
            None,
            vec![("LIVESTORE_JWT_SECRET", spaces.as_str())],
            None,
            "auth.jwt_secret is empty or all whitespace",
        ),
        (
            None,
            vec![("LIVESTORE_AUTH_TOKENS", "letmein-please")],
            Some("letmein-please"),
            "auth.tokens[0] is 14 bytes long",
        ),
        (
            Some("[auth]\ntokens = [\"tok-secret-in-broken-config-9f8e7d\" 5]\n"),
            vec![],
            Some("tok-secret-in-broken-config-9f8e7d"),
            "line 2",
        ),
        (
            Some("[auth]\njwt_secret = \"unterminated-secret-value-0123\n"),
            vec![],
            Some("unterminated-secret-value-0123"),
            "line 2",
        ),
        (
            Some("[limits]\nmax_message_bytes = \"s3cret-where-a-number-goes-4711\"\n"),
            vec![],
            Some("s3cret-where-a-number-goes-4711"),
            "line 2",
        ),
    ] {
        let stderr = refused_start(&[], config, &env);
        assert!(stderr.contains(problem), "{config:?}: {stderr}");
        if let Some(secret) = secret {
            assert!(!stderr.contains(secret), "{secret} leaked: {stderr}");
        }
    }
}

#[tokio::test]
async fn no_log_level_prints_a_credential() {
    let objects = tempfile::tempdir().unwrap();
    let s3_secret = "s3-secret-for-trace-test-0123456789ab";
    let config = format!(
        "[auth]\ntokens = [\"{TOKEN}\"]\njwt_secret = \"{JWT_SECRET}\"\n[files.backend]\nkind = \"embedded\"\n\
         data_dir = \"{}\"\naccess_key_id = \"LSOTRACEKEY000000001\"\nsecret_access_key = \"{s3_secret}\"\n",
        objects.path().display()
    );
    let (server, _dir) = server_with_config(&config, &[("LIVESTORE_LOG", "trace")]);
    let token = jwt(600);
    // A socket whose URL and every request carry the JWT, as LiveStore's client sends it.
    let url = format!("{}&payload={}", server.ws_url("traced"), payload_param(&token));
    let mut client = WsClient::connect(&url).await;
    let mut push = push_request("1", "traced", events(1, 1), None);
    push["payload"]["payload"] = json!({"authToken": token});
    client.send(&push).await;
    assert_eq!(client.frame().await["exit"]["_tag"], "Success");
    let http = format!("{}/?storeId=traced&transport=http", server.http_url());
    let bearer = format!("Bearer {TOKEN}");
    let (status, _) = request(
        reqwest::Method::POST,
        &http,
        &[("authorization", &bearer), ("cookie", "session=cookie-secret-77aa")],
        Some(PING.replace("\"o\"", "\"traced\"").as_str()),
    )
    .await;
    assert_eq!(status, 200);
    let (status, signed) = request(
        reqwest::Method::POST,
        &format!("{}/api/v1/sign/upload", server.http_url()),
        &[("authorization", &bearer)],
        Some(r#"{"key":"traced/file"}"#),
    )
    .await;
    assert_eq!(status, 200, "{signed}");
    let upload: Value = serde_json::from_str(&signed).unwrap();
    let put = reqwest::Client::new()
        .put(upload["url"].as_str().unwrap())
        .body("bytes")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    client.close().await;
    let log = server.log();
    assert!(log.contains("DEBUG"), "the log is at trace level, so debug lines are in it");
    let signature =
        upload["url"].as_str().unwrap().rsplit("X-Amz-Signature=").next().unwrap().to_owned();
    for secret in
        [TOKEN, JWT_SECRET, &token[token.len() - 30..], s3_secret, "cookie-secret-77aa", &signature]
    {
        assert!(!log.contains(secret), "{secret} is in the trace log");
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn server_files_are_private() {
    let mut server = TestServer::start();
    let mut client = WsClient::connect(&server.ws_url("private")).await;
    push_events(&mut client, "private", 0, 2, 2).await;
    let (status, signed) = request(
        reqwest::Method::POST,
        &format!("{}/api/v1/sign/upload", server.http_url()),
        &[],
        Some(r#"{"key":"private/file"}"#),
    )
    .await;
    assert_eq!(status, 200);
    let upload: Value = serde_json::from_str(&signed).unwrap();
    reqwest::Client::new().put(upload["url"].as_str().unwrap()).body("bytes").send().await.unwrap();
    let data = server.data_dir().to_owned();
    assert_eq!(mode(&data), 0o700);
    for file in ["sync.sqlite3", "sync.sqlite3-wal", "objects/credentials.json"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&data.join("objects")), 0o700);
    let mut objects = Vec::new();
    let mut stack = vec![data.join("objects/objects")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else {
                objects.push(entry.path());
            }
        }
    }
    assert_eq!(objects.len(), 1);
    assert_eq!(mode(&objects[0]), 0o600);
    // Files an older version left readable are made private at the next start.
    server.stop();
    for file in ["sync.sqlite3", "objects/credentials.json"] {
        std::fs::set_permissions(data.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    server.spawn();
    assert_eq!(mode(&data), 0o700);
    for file in ["sync.sqlite3", "objects/credentials.json"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file} after a restart");
    }
}

#[tokio::test]
async fn bearer_is_matched_in_any_case_everywhere() {
    let server = TestServer::start_with_env(&[("LIVESTORE_AUTH_TOKENS", TOKEN)]);
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let value = format!("{scheme} {TOKEN}");
        assert_eq!(
            upgrade(&server.ws_url("cased"), &[("authorization", &value)]).await,
            101,
            "{scheme}"
        );
        let http = format!("{}/?storeId=cased&transport=http", server.http_url());
        let ping = PING.replace("\"o\"", "\"cased\"");
        let (status, _) =
            request(reqwest::Method::POST, &http, &[("authorization", &value)], Some(&ping)).await;
        assert_eq!(status, 200, "{scheme} on the HTTP transport");
        let signer = format!("{}/api/v1/sign/download", server.http_url());
        let (status, text) = request(
            reqwest::Method::POST,
            &signer,
            &[("authorization", &value)],
            Some(r#"{"key":"cased/x"}"#),
        )
        .await;
        assert_eq!(status, 200, "{scheme} on the signer: {text}");
    }
}

#[tokio::test]
async fn json_nesting_is_limited_on_every_decoder() {
    let server = TestServer::start();
    for depth in [200usize, 100_000] {
        let args = format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        let frame = format!(
            r#"{{"_tag":"Request","id":"1","tag":"SyncWsRpc.Push","payload":{{"storeId":"deep","batch":[{{"name":"v1.Deep","args":{args},"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}}],"backendId":{{"_tag":"None"}}}},"headers":[]}}"#
        );
        let mut client = WsClient::connect(&server.ws_url("deep")).await;
        client.send_text(frame.clone()).await;
        assert_eq!(client.close_code().await, Some(1007), "{depth} levels over WebSocket");
        let http_frame = frame.replace("SyncWsRpc.Push", "SyncHttpRpc.Push");
        let (status, text) =
            http_post(&format!("{}/?storeId=deep&transport=http", server.http_url()), http_frame)
                .await;
        assert_eq!(status, 400, "{depth} levels over HTTP: {text}");
        assert!(text.contains("nests deeper than 128 levels"), "{text}");
    }
    // Nothing was stored, and the server answers.
    let mut client = WsClient::connect(&server.ws_url("deep")).await;
    client.send(&pull_request("0", "deep", false, None)).await;
    assert_eq!(chunk_seq_nums(&client.frame().await).0, Vec::<u64>::new());
    // 128 levels in all are accepted: the limit is not lower than it says.
    let args = format!("{}1{}", "[".repeat(120), "]".repeat(120));
    let frame = format!(
        r#"{{"_tag":"Request","id":"2","tag":"SyncWsRpc.Push","payload":{{"storeId":"deep","batch":[{{"name":"v1.Deep","args":{args},"seqNum":1,"parentSeqNum":0,"clientId":"c","sessionId":"s"}}],"backendId":{{"_tag":"None"}}}},"headers":[]}}"#
    );
    client.send_text(frame).await;
    assert_eq!(client.frame().await["exit"]["_tag"], "Success");
}
