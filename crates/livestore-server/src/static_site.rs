//! Static files from `--static-dir` (e.g. a built web app), so one `livestore serve` serves the app, its sync
//! endpoint and its file services from one origin.
//!
//! Only `GET` and `HEAD` requests that are not for another route reach it: the sync endpoint (`?storeId=…&transport=…`),
//! `/api`, `/s3`, `/healthz` and `/metrics` keep priority. `/` and any directory path ending in `/` serve that
//! directory's `index.html`; a directory path without the slash is redirected to it (so relative links resolve).
//!
//! Nothing outside the directory is reachable: `..` and `.` segments, dot-files (`.env`, `.git`), encoded slashes
//! and backslashes, NUL bytes and symlinks leading out of the directory all answer 404. Neither is anything that
//! looks like server state, should it be inside: SQLite databases (by name, `*.sqlite3`, `*-wal`, …, and by their
//! header bytes whatever the name), lock files and `credentials.json`. (The configuration already refuses a static
//! dir that contains the data dir, the object store or the config file; this is the second line.) Files are streamed, with a
//! `Content-Type` by extension, `X-Content-Type-Options: nosniff`, a weak `ETag` (size and mtime, `If-None-Match`
//! gives 304), and `Cache-Control` that lets browsers keep Vite's content-hashed `/assets/*` forever while
//! revalidating everything else.

use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncReadExt;

use crate::http_error::HttpError;

/// Bytes read from disk per body chunk.
const CHUNK: usize = 64 * 1024;

/// A directory served read-only under `/`.
#[derive(Debug, Clone)]
pub(crate) struct StaticSite {
    /// Canonical (absolute, symlink-free) path of the directory.
    root: PathBuf,
}

/// Why a request path maps to no file.
#[derive(Debug, PartialEq)]
enum Refusal {
    /// Not a path this site serves (traversal, dot-file, bad encoding): answered like a missing file.
    NotServed,
}

impl StaticSite {
    /// Opens `dir`, which must be an existing directory.
    pub(crate) fn open(dir: &Path) -> io::Result<StaticSite> {
        let root = std::fs::canonicalize(dir)?;
        if !root.is_dir() {
            return Err(io::Error::new(io::ErrorKind::NotADirectory, "not a directory"));
        }
        Ok(StaticSite { root })
    }

    /// Answers a `GET` or `HEAD` for `path` (the URI path, still percent-encoded) and `query`.
    pub(crate) async fn serve(
        &self,
        method: &Method,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Response {
        let Ok(segments) = decode_segments(path) else { return not_found() };
        let mut candidate = self.root.clone();
        candidate.extend(&segments);
        let Some(metadata) = self.metadata_inside(&candidate).await else { return not_found() };
        let (file, metadata) = if metadata.is_dir() {
            if !path.ends_with('/') {
                // One leading slash only: `//host/dir` as a Location is protocol-relative, a redirect to `host`.
                let path = format!("/{}", path.trim_start_matches('/'));
                let location = match query {
                    Some(query) => format!("{path}/?{query}"),
                    None => format!("{path}/"),
                };
                return redirect(&location);
            }
            let index = candidate.join("index.html");
            match self.metadata_inside(&index).await {
                Some(metadata) if metadata.is_file() => (index, metadata),
                _ => return not_found(),
            }
        } else if metadata.is_file() {
            (candidate, metadata)
        } else {
            return not_found();
        };

        if is_server_state_name(&file) {
            return not_found();
        }
        let mut opened = match tokio::fs::File::open(&file).await {
            Ok(opened) => opened,
            Err(error) => {
                tracing::warn!(%error, path, "cannot open a static file");
                return not_found();
            }
        };
        match starts_like_sqlite(&mut opened).await {
            Ok(false) => {}
            Ok(true) => return not_found(),
            Err(error) => {
                tracing::warn!(%error, path, "cannot read a static file");
                return not_found();
            }
        }
        let etag = weak_etag(&metadata);
        let mut response_headers = HeaderMap::new();
        response_headers
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(&file)));
        response_headers
            .insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        response_headers
            .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control(path)));
        if let Ok(value) = HeaderValue::from_str(&etag) {
            response_headers.insert(header::ETAG, value);
        }
        if if_none_match(headers, &etag) {
            return (StatusCode::NOT_MODIFIED, response_headers).into_response();
        }
        response_headers.insert(header::CONTENT_LENGTH, HeaderValue::from(metadata.len()));
        if method == Method::HEAD {
            return (StatusCode::OK, response_headers).into_response();
        }
        (StatusCode::OK, response_headers, stream_body(opened)).into_response()
    }

    /// The metadata of `path` if it exists and, symlinks resolved, lies inside the root.
    async fn metadata_inside(&self, path: &Path) -> Option<std::fs::Metadata> {
        let canonical = tokio::fs::canonicalize(path).await.ok()?;
        if !canonical.starts_with(&self.root) {
            return None;
        }
        tokio::fs::metadata(&canonical).await.ok()
    }
}

/// File names of server state that a static site never serves, wherever they are.
fn is_server_state_name(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else { return true };
    let name = name.to_ascii_lowercase();
    const SUFFIXES: [&str; 9] =
        [".sqlite", ".sqlite3", ".db", ".db3", "-wal", "-shm", "-journal", ".lock", ".toml"];
    SUFFIXES.iter().any(|suffix| name.ends_with(suffix))
        || matches!(name.as_str(), "credentials.json" | "lock")
}

/// Whether the file begins with SQLite's header (`SQLite format 3\0`); leaves it positioned at its start.
async fn starts_like_sqlite(file: &mut tokio::fs::File) -> io::Result<bool> {
    use tokio::io::AsyncSeekExt;
    const MAGIC: &[u8; 16] = b"SQLite format 3\0";
    let mut header = [0u8; 16];
    let mut filled = 0;
    while filled < header.len() {
        match file.read(&mut header[filled..]).await? {
            0 => break,
            read => filled += read,
        }
    }
    file.seek(io::SeekFrom::Start(0)).await?;
    Ok(filled == MAGIC.len() && &header == MAGIC)
}

/// Splits a URI path into decoded segments, refusing anything that could leave the root or reach hidden files.
fn decode_segments(path: &str) -> Result<Vec<String>, Refusal> {
    let Some(rest) = path.strip_prefix('/') else { return Err(Refusal::NotServed) };
    let mut segments = Vec::new();
    for raw in rest.split('/') {
        if raw.is_empty() {
            continue;
        }
        let segment = percent_decode(raw)?;
        if segment.starts_with('.') || segment.contains(['/', '\\', '\0']) {
            return Err(Refusal::NotServed);
        }
        segments.push(segment);
    }
    Ok(segments)
}

/// `%XX` decoding to UTF-8; a malformed escape or invalid UTF-8 is refused.
fn percent_decode(raw: &str) -> Result<String, Refusal> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = bytes.get(index + 1..index + 3).ok_or(Refusal::NotServed)?;
            let hex = std::str::from_utf8(hex).map_err(|_| Refusal::NotServed)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| Refusal::NotServed)?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).map_err(|_| Refusal::NotServed)
}

fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match extension.as_str() {
        "html" | "htm" => "text/html; charset=utf-8",
        "js" | "mjs" | "cjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "webmanifest" => "application/manifest+json",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        "xml" => "application/xml",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "ico" => "image/x-icon",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "otf" => "font/otf",
        "pdf" => "application/pdf",
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mp3" => "audio/mpeg",
        _ => "application/octet-stream",
    }
}

/// Vite names everything under `assets/` by content hash, so those never change; the rest must be revalidated.
fn cache_control(path: &str) -> &'static str {
    if path.starts_with("/assets/") { "public, max-age=31536000, immutable" } else { "no-cache" }
}

fn weak_etag(metadata: &std::fs::Metadata) -> String {
    let modified = metadata
        .modified()
        .ok()
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |duration| duration.as_nanos());
    format!("W/\"{:x}-{:x}\"", metadata.len(), modified)
}

fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .any(|candidate| {
            candidate == "*" || candidate.trim_start_matches("W/") == etag.trim_start_matches("W/")
        })
}

fn stream_body(file: tokio::fs::File) -> Body {
    let chunks = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buffer = vec![0; CHUNK];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                Some((Ok::<_, io::Error>(Bytes::from(buffer)), Some(file)))
            }
            Err(error) => Some((Err(error), None)),
        }
    });
    Body::from_stream(chunks)
}

fn not_found() -> Response {
    HttpError::NotFound.into_response()
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, value)]).into_response(),
        Err(_) => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(site: &StaticSite, path: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
        request(site, &Method::GET, path, &HeaderMap::new()).await
    }

    async fn request(
        site: &StaticSite,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> (StatusCode, HeaderMap, Vec<u8>) {
        let (path, query) = match path.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path, None),
        };
        let response = site.serve(method, path, query, headers).await;
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap().to_vec();
        (status, headers, body)
    }

    /// root/{index.html, assets/app.js, assets/sqlite.wasm, sub/index.html, empty/, .env, café.txt},
    /// and outside/secret.txt next to root.
    fn fixture() -> (tempfile::TempDir, StaticSite) {
        let temp = tempfile::tempdir().unwrap();
        let root = temp.path().join("root");
        std::fs::create_dir_all(root.join("assets")).unwrap();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::create_dir_all(temp.path().join("outside")).unwrap();
        std::fs::write(root.join("index.html"), "<!doctype html>home").unwrap();
        std::fs::write(root.join("assets/app.js"), "console.log(1)").unwrap();
        std::fs::write(root.join("assets/sqlite.wasm"), b"\0asm").unwrap();
        std::fs::write(root.join("sub/index.html"), "sub").unwrap();
        std::fs::write(root.join(".env"), "SECRET=1").unwrap();
        std::fs::write(root.join("café.txt"), "coffee").unwrap();
        std::fs::write(temp.path().join("outside/secret.txt"), "secret").unwrap();
        let site = StaticSite::open(&root).unwrap();
        (temp, site)
    }

    #[tokio::test]
    async fn serves_index_and_files_with_their_content_types() {
        let (_temp, site) = fixture();
        let (status, headers, body) = get(&site, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"<!doctype html>home");
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::CONTENT_LENGTH], "19");

        let (status, headers, body) = get(&site, "/assets/app.js").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"console.log(1)");
        assert_eq!(headers[header::CONTENT_TYPE], "text/javascript; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "public, max-age=31536000, immutable");

        let (_, headers, _) = get(&site, "/assets/sqlite.wasm").await;
        assert_eq!(headers[header::CONTENT_TYPE], "application/wasm");
        let (status, _, body) = get(&site, "/caf%C3%A9.txt").await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, b"coffee".as_slice()));
        let (_, headers, _) = get(&site, "/index.html").await;
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    }

    #[tokio::test]
    async fn directories_serve_their_index_and_redirect_without_the_slash() {
        let (_temp, site) = fixture();
        let (status, _, body) = get(&site, "/sub/").await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, b"sub".as_slice()));
        let (status, headers, _) = get(&site, "/sub?token=x").await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(headers[header::LOCATION], "/sub/?token=x");
        assert_eq!(get(&site, "/empty/").await.0, StatusCode::NOT_FOUND);
        assert_eq!(get(&site, "/missing.js").await.0, StatusCode::NOT_FOUND);
        assert_eq!(get(&site, "/assets/missing.js").await.0, StatusCode::NOT_FOUND);
    }

    /// Found by the security tests: `//sub` redirected to `//sub/`, which browsers read as the host `sub`.
    #[tokio::test]
    async fn redirects_never_leave_the_origin() {
        let (_temp, site) = fixture();
        for path in ["//sub", "///sub", "//sub?x=1"] {
            let (status, headers, _) = get(&site, path).await;
            assert_eq!(status, StatusCode::PERMANENT_REDIRECT, "{path}");
            let location = headers[header::LOCATION].to_str().unwrap();
            assert!(
                location.starts_with("/sub/") && !location.starts_with("//"),
                "{path} -> {location}"
            );
        }
    }

    #[tokio::test]
    async fn nothing_outside_the_directory_or_hidden_is_reachable() {
        let (temp, site) = fixture();
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(temp.path().join("outside"), temp.path().join("root/link"))
                .unwrap();
            std::os::unix::fs::symlink(
                temp.path().join("outside/secret.txt"),
                temp.path().join("root/secret-link.txt"),
            )
            .unwrap();
        }
        for path in [
            "/../outside/secret.txt",
            "/assets/../../outside/secret.txt",
            "/%2e%2e/outside/secret.txt",
            "/%2E%2E/outside/secret.txt",
            "/assets/%2e%2e%2f%2e%2e%2foutside/secret.txt",
            "/..%2foutside/secret.txt",
            "/..%5coutside%5csecret.txt",
            "/./index.html",
            "/.env",
            "/%2eenv",
            "/index.html%00.js",
            "/%zz",
            "/%C3",
            "/link/secret.txt",
            "/secret-link.txt",
            "relative.txt",
        ] {
            let (status, _, body) = get(&site, path).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{path} must not be served");
            assert_ne!(body, b"secret", "{path}");
            assert_ne!(body, b"SECRET=1", "{path}");
        }
    }

    #[tokio::test]
    async fn server_state_is_never_served_by_name_or_by_content() {
        let (temp, site) = fixture();
        let root = temp.path().join("root");
        for name in [
            "sync.sqlite3",
            "sync.sqlite3-wal",
            "sync.sqlite3-shm",
            "x.db",
            "credentials.json",
            "livestore.lock",
            "livestore.toml",
        ] {
            std::fs::write(root.join(name), "state").unwrap();
            let (status, _, _) = get(&site, &format!("/{name}")).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{name}");
        }
        let mut database = b"SQLite format 3\0".to_vec();
        database.extend_from_slice(&[7; 100]);
        std::fs::write(root.join("innocent.png"), &database).unwrap();
        for method in [Method::GET, Method::HEAD] {
            let (status, _, _) = request(&site, &method, "/innocent.png", &HeaderMap::new()).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{method}: a database under another name");
        }
        std::fs::write(root.join("short.txt"), "SQLite").unwrap();
        assert_eq!(
            get(&site, "/short.txt").await.2,
            b"SQLite",
            "a file shorter than the header is served"
        );
    }

    #[tokio::test]
    async fn head_and_conditional_requests() {
        let (_temp, site) = fixture();
        let (status, headers, body) =
            request(&site, &Method::HEAD, "/assets/app.js", &HeaderMap::new()).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty());
        assert_eq!(headers[header::CONTENT_LENGTH], "14");
        let etag = headers[header::ETAG].clone();
        assert!(etag.to_str().unwrap().starts_with("W/\""));

        let mut conditional = HeaderMap::new();
        conditional.insert(header::IF_NONE_MATCH, etag);
        let (status, _, body) = request(&site, &Method::GET, "/assets/app.js", &conditional).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        assert!(body.is_empty());
        conditional.insert(header::IF_NONE_MATCH, HeaderValue::from_static("W/\"other\""));
        assert_eq!(
            request(&site, &Method::GET, "/assets/app.js", &conditional).await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn large_files_stream_intact() {
        let (temp, site) = fixture();
        let bytes: Vec<u8> = (0..(3 * CHUNK + 17)).map(|index| (index * 7 % 251) as u8).collect();
        std::fs::write(temp.path().join("root/assets/big.bin"), &bytes).unwrap();
        let (status, headers, body) = get(&site, "/assets/big.bin").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/octet-stream");
        assert_eq!(body, bytes);
    }

    #[test]
    fn open_refuses_a_missing_directory_or_a_file() {
        let (temp, _site) = fixture();
        assert!(StaticSite::open(&temp.path().join("nope")).is_err());
        assert!(StaticSite::open(&temp.path().join("root/index.html")).is_err());
    }
}
