//! The emulator's REST API: one handler that records, delays, fails or routes each call.

use super::Emulator;
use super::Recorded;
use super::state::{FilePart, Reply};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn disposition_param(headers: &str, key: &str) -> Option<String> {
    let pat = format!("{key}=\"");
    let line = headers
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("content-disposition"))?;
    let start = line.find(&pat)? + pat.len();
    let end = line[start..].find('"')? + start;
    Some(line[start..end].to_owned())
}

/// serenity sends attachments as multipart with the JSON in a `payload_json` part.
pub(super) fn parse_multipart(content_type: &str, body: &[u8]) -> (Value, Vec<FilePart>) {
    let Some(boundary) = content_type.split("boundary=").nth(1) else {
        return (Value::Null, Vec::new());
    };
    let delim = format!("--{}", boundary.trim_matches('"'));
    let delim = delim.as_bytes();
    let mut payload = Value::Null;
    let mut files = Vec::new();
    let mut pos = match find(body, delim, 0) {
        Some(p) => p + delim.len(),
        None => return (payload, files),
    };
    while let Some(next) = find(body, delim, pos) {
        let part = &body[pos..next];
        pos = next + delim.len();
        let part = part.strip_prefix(b"\r\n").unwrap_or(part);
        let part = part.strip_suffix(b"\r\n").unwrap_or(part);
        let Some(split) = find(part, b"\r\n\r\n", 0) else {
            continue;
        };
        let headers = String::from_utf8_lossy(&part[..split]).into_owned();
        let data = part[split + 4..].to_vec();
        let name = disposition_param(&headers, "name").unwrap_or_default();
        if name == "payload_json" {
            payload = serde_json::from_slice(&data).unwrap_or(Value::Null);
        } else {
            let content_type = headers.lines().find_map(|l| {
                l.to_ascii_lowercase()
                    .starts_with("content-type:")
                    .then(|| l["content-type:".len()..].trim().to_owned())
            });
            files.push(FilePart {
                filename: disposition_param(&headers, "filename").unwrap_or_else(|| name.clone()),
                name,
                content_type,
                data,
            });
        }
        if body[pos..].starts_with(b"--") {
            break;
        }
    }
    (payload, files)
}

pub(super) async fn rest_route(
    State(emulator): State<Emulator>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let sent_at = std::time::Instant::now();
    let path = uri.path();
    let path = path.strip_prefix("/api/v10").unwrap_or(path).to_owned();
    let query = uri.query().unwrap_or("").to_owned();
    let latency = emulator.lock().latency;
    if let Some(latency) = latency {
        tokio::time::sleep(latency).await;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (json_body, files) = if content_type.starts_with("multipart/form-data") {
        parse_multipart(content_type, &body)
    } else if body.is_empty() {
        (Value::Null, Vec::new())
    } else {
        let v = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
        (v, Vec::new())
    };
    let reply = {
        let mut st = emulator.lock();
        st.requests.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            query: query.clone(),
            body: json_body.clone(),
            sent_at,
        });
        if st
            .hangs
            .iter()
            .any(|(m, p)| m == method.as_str() && path.contains(p.as_str()))
        {
            None
        } else {
            Some(match st.take_failure(method.as_str(), &path) {
                Some((status, body, applied)) => {
                    if applied {
                        st.route(&method, &path, &query, &json_body, &files);
                    }
                    Err((status, body))
                }
                None => Ok(st.route(&method, &path, &query, &json_body, &files)),
            })
        }
    };
    emulator.bump();
    let Some(reply) = reply else {
        return std::future::pending().await;
    };
    match reply {
        Err((status, body)) => {
            let mut res = json_response(status, &body);
            if let Some(secs) = body["retry_after"].as_f64() {
                res.headers_mut()
                    .insert("retry-after", HeaderValue::from(secs.ceil() as u64));
            }
            res
        }
        Ok(Reply::Json(status, v)) => json_response(status, &v),
        Ok(Reply::NoContent) => StatusCode::NO_CONTENT.into_response(),
        Ok(Reply::Raw(bytes)) => Response::new(Body::from(bytes)),
    }
}

fn json_response(status: u16, body: &Value) -> Response {
    let mut res = Response::new(Body::from(body.to_string()));
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}
