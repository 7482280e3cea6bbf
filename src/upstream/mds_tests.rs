//! The HTTP client against a scripted server on loopback: what goes on the wire, and what
//! comes back is trusted only when it should be.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::*;

/// A server that answers each connection's requests with the next scripted response and
/// records every request head it saw.
struct Scripted {
    addr: String,
    heads: Arc<Mutex<Vec<String>>>,
}

const FLAVOR: &str = "Metadata-Flavor: Google\r\n";

fn response(status: &str, headers: &str, body: &str) -> String {
    format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\n\r\n{body}", body.len())
}

async fn scripted(responses: Vec<String>) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        let mut responses = responses.into_iter();
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            loop {
                let mut buf = vec![0u8; 4096];
                let Ok(n) = socket.read(&mut buf).await else {
                    break;
                };
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
                let Some(reply) = responses.next() else {
                    return;
                };
                if socket.write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    });
    Scripted { addr, heads }
}

fn client(addr: &str, timeout: Duration, max_value: u64) -> HttpMds {
    HttpMds::new(HttpConfig { endpoint: addr.into(), timeout, max_value, mtls: Settings::off() })
        .unwrap()
}

#[tokio::test]
async fn requests_carry_the_flavor_and_host_headers() {
    let server = scripted(vec![response("200 OK", FLAVOR, "my-project")]).await;
    let mds = client(&server.addr, Duration::from_secs(5), 1024);
    assert_eq!(&mds.get("project/project-id").await.unwrap()[..], b"my-project");
    let head = server.heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.starts_with("get /computemetadata/v1/project/project-id http/1.1"), "{head}");
    assert!(head.contains("metadata-flavor: google\r\n"), "{head}");
    assert!(head.contains("host: metadata.google.internal\r\n"), "{head}");
}

#[tokio::test]
async fn a_response_without_the_flavor_header_is_refused_whatever_its_status() {
    for status in ["200 OK", "404 Not Found", "403 Forbidden", "503 Service Unavailable"] {
        let server = scripted(vec![response(status, "", "<html>proxy</html>")]).await;
        let mds = client(&server.addr, Duration::from_secs(5), 1024);
        let err = mds.get("instance/id").await.unwrap_err();
        assert!(matches!(err, Error::Misconfigured { .. }), "{status}: {err:?}");
        assert_eq!(server.heads.lock().unwrap().len(), 1, "{status}: not retried");
    }
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let redirect = "Location: http://metadata.google.internal/computeMetadata/v1/instance/\r\n";
    let server = scripted(vec![response(
        "301 Moved Permanently",
        &format!("{FLAVOR}{redirect}"),
        "/computeMetadata/v1/instance/\n",
    )])
    .await;
    let mds = client(&server.addr, Duration::from_secs(5), 1024);
    assert!(matches!(mds.get("instance").await, Err(Error::Misconfigured { .. })));
    assert_eq!(server.heads.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn server_errors_and_429_are_retried_client_errors_are_not() {
    let server = scripted(vec![
        response("503 Service Unavailable", FLAVOR, ""),
        response("429 Too Many Requests", FLAVOR, ""),
        response("500 Internal Server Error", FLAVOR, ""),
        response("200 OK", FLAVOR, "42"),
        response("400 Bad Request", FLAVOR, "bad"),
    ])
    .await;
    let mds = client(&server.addr, Duration::from_secs(10), 1024);
    assert_eq!(&mds.get("instance/id").await.unwrap()[..], b"42");
    assert_eq!(server.heads.lock().unwrap().len(), 4);
    assert!(matches!(mds.get("instance/id").await, Err(Error::BadRequest { .. })));
    assert_eq!(server.heads.lock().unwrap().len(), 5);
}

#[tokio::test]
async fn retries_stop_inside_the_timeout() {
    let outage: Vec<String> =
        (0..100).map(|_| response("503 Service Unavailable", FLAVOR, "")).collect();
    let server = scripted(outage).await;
    let mds = client(&server.addr, Duration::from_secs(1), 1024);
    let start = std::time::Instant::now();
    let err = mds.get("instance/id").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(start.elapsed() < Duration::from_millis(1500), "{:?}", start.elapsed());
    assert!(server.heads.lock().unwrap().len() >= 3, "retried with backoff");
}

#[tokio::test]
async fn an_unreachable_endpoint_fails_within_the_timeout_and_then_at_once() {
    // Nothing listens on port 1: every connection is refused.
    let mds = client("127.0.0.1:1", Duration::from_secs(1), 1024);
    let start = std::time::Instant::now();
    assert!(mds.get("instance/id").await.unwrap_err().is_transient());
    assert!(start.elapsed() < Duration::from_millis(1500));
    let start = std::time::Instant::now();
    let err = mds.get("instance/zone").await.unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(100), "{:?}", start.elapsed());
    assert!(err.is_transient() && err.to_string().contains("not retried yet"), "{err}");
}

#[tokio::test]
async fn http_errors_do_not_hold_other_requests_back() {
    let mut script: Vec<String> =
        (0..100).map(|_| response("503 Service Unavailable", FLAVOR, "")).collect();
    script.insert(0, response("500 Internal Server Error", FLAVOR, ""));
    let server = scripted(script).await;
    let mds = client(&server.addr, Duration::from_millis(300), 1024);
    mds.get("instance/service-accounts/default/identity?audience=x").await.unwrap_err();
    let seen = server.heads.lock().unwrap().len();
    mds.get("instance/id").await.unwrap_err();
    assert!(server.heads.lock().unwrap().len() > seen, "the next request was sent");
}

#[tokio::test]
async fn oversized_and_truncated_bodies_are_never_served() {
    let big = "x".repeat(2048);
    let truncated = format!("HTTP/1.1 200 OK\r\n{FLAVOR}Content-Length: 100\r\n\r\nshort");
    let server = scripted(vec![response("200 OK", FLAVOR, &big), truncated]).await;
    let mds = client(&server.addr, Duration::from_secs(1), 1024);
    let err = mds.get("instance/attributes/big").await.unwrap_err();
    assert_eq!(err.errno(), libc::EFBIG, "{err:?}");
    let err = mds.get("instance/attributes/cut").await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO, "{err:?}");
}

#[tokio::test]
async fn a_slow_answer_does_not_hold_other_requests_back() {
    // The first request connects but its answer never comes; the second is answered at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        let mut first = true;
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let _ = socket.read(&mut buf).await;
            if std::mem::take(&mut first) {
                held.push(socket);
                continue;
            }
            let _ = socket.write_all(response("200 OK", FLAVOR, "42").as_bytes()).await;
        }
    });
    let mds = client(&addr, Duration::from_millis(300), 1024);
    let err = mds.get("instance/service-accounts/default/token").await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert_eq!(&mds.get("instance/id").await.unwrap()[..], b"42", "not held back");
}

#[tokio::test]
async fn after_a_request_ran_out_of_retries_the_next_try_once_until_one_succeeds() {
    let mut script: Vec<String> =
        (0..30).map(|_| response("503 Service Unavailable", FLAVOR, "")).collect();
    script.extend((0..3).map(|_| response("200 OK", FLAVOR, "42")));
    let server = scripted(script).await;
    let seen = || server.heads.lock().unwrap().len();
    let mds = client(&server.addr, Duration::from_millis(500), 1024);
    mds.get("instance/id").await.unwrap_err();
    let after_first = seen();
    assert!(after_first >= 2, "the first request retried");
    let start = std::time::Instant::now();
    mds.get("instance/zone").await.unwrap_err();
    assert_eq!(seen(), after_first + 1, "one attempt, no retries");
    assert!(start.elapsed() < Duration::from_millis(200), "{:?}", start.elapsed());
    // Use up the 503s one attempt at a time; the first success ends the strain.
    while mds.get("instance/zone").await.is_err() {}
    assert_eq!(&mds.get("instance/id").await.unwrap()[..], b"42");
}
