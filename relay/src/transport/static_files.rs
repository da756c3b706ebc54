//! Static files from `--static-dir` (the demo site), for every GET/HEAD no other route took.
//!
//! Safety rules, in order: the path is percent-decoded once; any segment that is empty after
//! the first, `.`/`..`, starts with a dot (hidden files), or holds a `/`, `\` or NUL once
//! decoded is refused; the file found is canonicalised and must still be inside the
//! canonical root (no symlink escapes); only regular files are served. Every refusal is a
//! plain 404, so the answer never tells what exists outside the root.
//!
//! Files are streamed in chunks rather than read whole. HTML gets `cache-control: no-cache`
//! (always revalidated, so a new deploy shows at once); everything carries a weak `ETag` and
//! `Last-Modified`, and conditional requests get 304.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::stream;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use tidewire_shared::ErrorCode;
use tokio::io::AsyncReadExt;

use super::{error_response, full, Body};
use crate::hub::Hub;
use crate::query::percent_decode;

/// Bytes read from disk per body chunk.
const CHUNK: usize = 64 * 1024;

/// Serves a file under `--static-dir`, or 404.
pub async fn handle(hub: Arc<Hub>, request: Request<Incoming>) -> Response<Body> {
    let Some(root) = hub.config.options.static_dir.as_deref() else {
        return not_found();
    };
    let head = request.method() == Method::HEAD;
    match resolve(root, request.uri().path()).await {
        Resolved::File(file) => serve(file, request.headers(), head).await,
        Resolved::Redirect(location) => redirect(&location, request.uri().query()),
        Resolved::NotFound => not_found(),
    }
}

fn not_found() -> Response<Body> {
    error_response(ErrorCode::NotFound, "not found")
}

/// What a request path maps to.
#[derive(Debug, PartialEq, Eq)]
enum Resolved {
    /// A regular file inside the root (canonical path).
    File(PathBuf),
    /// A directory requested without its trailing slash: redirect so relative links work.
    Redirect(String),
    /// Nothing servable.
    NotFound,
}

/// The decoded, checked segments of a request path, or `None` if it must be refused.
fn segments(raw_path: &str) -> Option<Vec<String>> {
    let decoded = percent_decode(raw_path).ok()?;
    let relative = decoded.strip_prefix('/')?;
    let mut segments = Vec::new();
    let raw_segments: Vec<&str> = raw_path.trim_start_matches('/').split('/').collect();
    let decoded_segments: Vec<&str> = relative.split('/').collect();
    // An encoded slash (%2F) makes the two splits disagree: refuse it.
    if raw_segments.len() != decoded_segments.len() {
        return None;
    }
    let last = decoded_segments.len() - 1;
    for (index, segment) in decoded_segments.into_iter().enumerate() {
        if segment.is_empty() {
            // Only a trailing slash (directory) may leave an empty segment.
            if index == last {
                continue;
            }
            return None;
        }
        if segment.starts_with('.') || segment.contains(['\\', '\0']) {
            return None;
        }
        segments.push(segment.to_owned());
    }
    Some(segments)
}

async fn resolve(root: &Path, raw_path: &str) -> Resolved {
    let Some(segments) = segments(raw_path) else {
        return Resolved::NotFound;
    };
    let Ok(root) = tokio::fs::canonicalize(root).await else {
        tracing::warn!(root = %root.display(), "--static-dir cannot be resolved");
        return Resolved::NotFound;
    };
    let mut candidate = root.clone();
    candidate.extend(&segments);
    let Some(found) = inside(&root, &candidate).await else {
        return Resolved::NotFound;
    };
    let Ok(metadata) = tokio::fs::metadata(&found).await else {
        return Resolved::NotFound;
    };
    if metadata.is_dir() {
        if !raw_path.ends_with('/') {
            // `segments` refused empty segments, so this cannot start with `//`.
            return Resolved::Redirect(format!("/{}/", raw_path.trim_start_matches('/')));
        }
        let Some(index) = inside(&root, &found.join("index.html")).await else {
            return Resolved::NotFound;
        };
        return match tokio::fs::metadata(&index).await {
            Ok(metadata) if metadata.is_file() => Resolved::File(index),
            _ => Resolved::NotFound,
        };
    }
    if metadata.is_file() {
        Resolved::File(found)
    } else {
        Resolved::NotFound
    }
}

/// `path` canonicalised, if it exists and stays under `root` (already canonical).
async fn inside(root: &Path, path: &Path) -> Option<PathBuf> {
    let canonical = tokio::fs::canonicalize(path).await.ok()?;
    canonical.starts_with(root).then_some(canonical)
}

fn redirect(location: &str, query: Option<&str>) -> Response<Body> {
    let location = match query {
        Some(query) => format!("{location}?{query}"),
        None => location.to_owned(),
    };
    let Ok(value) = HeaderValue::from_str(&location) else {
        return not_found();
    };
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    response.headers_mut().insert(header::LOCATION, value);
    response
}

/// The `Content-Type` for a file name.
pub(crate) fn content_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|extension| extension.to_str())
        .map(str::to_ascii_lowercase);
    match extension.as_deref() {
        Some("html" | "htm") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("wasm") => "application/wasm",
        Some("json" | "map") => "application/json",
        Some("webmanifest") => "application/manifest+json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("ico") => "image/x-icon",
        Some("woff2") => "font/woff2",
        Some("woff") => "font/woff",
        Some("txt") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

async fn serve(path: PathBuf, request_headers: &HeaderMap, head: bool) -> Response<Body> {
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(error) => {
            tracing::debug!(%error, path = %path.display(), "static file cannot be opened");
            return not_found();
        }
    };
    let metadata = match file.metadata().await {
        Ok(metadata) if metadata.is_file() => metadata,
        _ => return not_found(),
    };
    let length = metadata.len();
    let modified = metadata.modified().ok();
    let etag = etag(length, modified);
    let kind = content_type(&path);
    let mut response = if not_modified(request_headers, &etag, modified) {
        let mut response = Response::new(full(""));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response
    } else {
        let body = if head { full("") } else { file_body(file) };
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
        response
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    if let Some(value) =
        modified.and_then(|modified| HeaderValue::from_str(&http_date(modified)).ok())
    {
        headers.insert(header::LAST_MODIFIED, value);
    }
    if kind.starts_with("text/html") {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The file as a body of [`CHUNK`]-sized frames. A read error ends the body early; the
/// `Content-Length` then does not match and hyper aborts the connection, so the client sees
/// a failed download rather than a silently truncated file.
fn file_body(file: tokio::fs::File) -> Body {
    let chunks = stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buffer = vec![0u8; CHUNK];
        match file.read(&mut buffer).await {
            Ok(0) => None,
            Ok(read) => {
                buffer.truncate(read);
                Some((Ok(Frame::data(Bytes::from(buffer))), Some(file)))
            }
            Err(error) => {
                tracing::warn!(%error, "reading a static file failed");
                None
            }
        }
    });
    StreamBody::new(chunks).boxed()
}

fn unix_seconds(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

fn etag(length: u64, modified: Option<SystemTime>) -> String {
    let nanos = modified
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_nanos());
    format!("W/\"{length:x}-{nanos:x}\"")
}

fn not_modified(headers: &HeaderMap, etag: &str, modified: Option<SystemTime>) -> bool {
    if let Some(candidates) = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|value| value.to_str().ok())
    {
        // If-None-Match wins over If-Modified-Since when both are present.
        return candidates
            .split(',')
            .map(str::trim)
            .any(|candidate| candidate == "*" || candidate == etag);
    }
    let since = headers
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|value| value.to_str().ok())
        .and_then(parse_http_date);
    match (since, modified) {
        (Some(since), Some(modified)) => unix_seconds(modified) <= since,
        _ => false,
    }
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only date format HTTP servers send.
fn http_date(time: SystemTime) -> String {
    httpdate::fmt_http_date(time)
}

/// Seconds since the Unix epoch of an HTTP date (IMF-fixdate, or the obsolete RFC 850 and
/// asctime forms a recipient must accept), `None` for anything else.
fn parse_http_date(text: &str) -> Option<u64> {
    httpdate::parse_http_date(text).ok().map(unix_seconds)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn refused_paths() {
        for bad in [
            "/../Cargo.toml",
            "/%2e%2e/Cargo.toml",
            "/%2E%2E/",
            "/a/../../b",
            "/a/%2e%2e/%2e%2e/b",
            "/.git/config",
            "/a/.env",
            "/a%2F..%2Fb",
            "/a%2fb",
            "//evil.example",
            "/a//b",
            "/a%5C..%5Cb",
            "/a%00b",
            "/%ff",
            "/%",
            "relative",
        ] {
            assert_eq!(segments(bad), None, "{bad}");
        }
    }

    #[test]
    fn accepted_paths() {
        assert_eq!(segments("/"), Some(vec![]));
        assert_eq!(segments("/index.html"), Some(vec!["index.html".to_owned()]));
        assert_eq!(
            segments("/pkg/tide%20wire.js"),
            Some(vec!["pkg".to_owned(), "tide wire.js".to_owned()])
        );
        assert_eq!(segments("/pkg/"), Some(vec!["pkg".to_owned()]));
    }

    #[test]
    fn content_types() {
        let cases = [
            ("a.html", "text/html; charset=utf-8"),
            ("a.js", "text/javascript; charset=utf-8"),
            ("a.mjs", "text/javascript; charset=utf-8"),
            ("a.css", "text/css; charset=utf-8"),
            ("a.wasm", "application/wasm"),
            ("a.json", "application/json"),
            ("a.svg", "image/svg+xml"),
            ("a.png", "image/png"),
            ("a.ico", "image/x-icon"),
            ("a.js.map", "application/json"),
            ("a.txt", "text/plain; charset=utf-8"),
            ("A.HTML", "text/html; charset=utf-8"),
            ("noext", "application/octet-stream"),
        ];
        for (name, expected) in cases {
            assert_eq!(content_type(Path::new(name)), expected, "{name}");
        }
    }

    #[test]
    fn http_dates_round_trip() {
        let moment = UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(http_date(moment), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784_111_777)
        );
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_210_096); // 2024-02-29
        assert_eq!(parse_http_date(&http_date(leap)), Some(1_709_210_096));
        assert_eq!(parse_http_date("yesterday"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49:37 CET"), None);
    }

    #[test]
    fn conditional_requests() {
        let modified = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let tag = etag(10, Some(modified));
        let mut headers = HeaderMap::new();
        assert!(!not_modified(&headers, &tag, Some(modified)));
        headers.insert(
            header::IF_NONE_MATCH,
            HeaderValue::from_str(&tag).expect("ascii"),
        );
        assert!(not_modified(&headers, &tag, Some(modified)));
        assert!(!not_modified(&headers, "W/\"other\"", Some(modified)));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::IF_MODIFIED_SINCE,
            HeaderValue::from_str(&http_date(modified)).expect("ascii"),
        );
        assert!(not_modified(&headers, &tag, Some(modified)));
        assert!(!not_modified(
            &headers,
            &tag,
            Some(modified + Duration::from_secs(5))
        ));
    }
}
