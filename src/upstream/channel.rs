//! One channel to the MDS: a `reqwest::Client` and the URL base it sends to, plain HTTP or HTTPS
//! with mutual TLS. `transport` decides which one is current.
//!
//! Requests over HTTPS go to `https://metadata.google.internal[:PORT]/` resolved to the
//! endpoint's address when the endpoint is an IP, so SNI names the MDS as `curl` on GCE does;
//! the certificate is checked against that name in every case (see `mtls`).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use reqwest::{header, redirect};

use crate::upstream::mtls::SERVER_NAME;

/// What a request travels over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain HTTP (mtls=off, or auto without credentials).
    Http,
    /// HTTPS with a client certificate.
    Mtls,
    /// Plain HTTP because the HTTPS handshake failed under mtls=auto.
    HttpFallback,
}

impl Kind {
    /// The name the status file and logs use.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Http => "http",
            Kind::Mtls => "https-mtls",
            Kind::HttpFallback => "http-fallback",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Http => "plain HTTP",
            Kind::Mtls => "HTTPS with mutual TLS",
            Kind::HttpFallback => "plain HTTP (the mutual TLS handshake failed)",
        })
    }
}

#[derive(Debug)]
pub struct Channel {
    pub(crate) client: reqwest::Client,
    /// `scheme://host[:port]/computeMetadata/v1/`.
    pub(crate) base: String,
    pub(crate) kind: Kind,
}

/// Idle keep-alive connections kept to the MDS (the watcher's long-poll is one more, in use).
const IDLE_CONNECTIONS: usize = 4;

fn builder(timeout: Duration) -> reqwest::ClientBuilder {
    // reqwest builds a rustls configuration for every client, even a plain HTTP one.
    crate::upstream::mtls::crypto_provider();
    let mut headers = header::HeaderMap::new();
    headers.insert("Metadata-Flavor", header::HeaderValue::from_static("Google"));
    // The `Host` the MDS expects: we connect to the IP to avoid DNS at boot
    // (reference/metadata-api.md §1.1) but still name the host.
    headers.insert(header::HOST, header::HeaderValue::from_static(SERVER_NAME));
    reqwest::Client::builder()
        .default_headers(headers)
        .redirect(redirect::Policy::none())
        .no_proxy()
        .connect_timeout(timeout.min(Duration::from_secs(2)))
        .pool_idle_timeout(Duration::from_secs(60))
        // A burst of concurrent reads (or an `ls -l` prefetch) opens connections; keep only a
        // few idle afterwards, not one per request of the burst.
        .pool_max_idle_per_host(IDLE_CONNECTIONS)
}

/// A plain HTTP channel (`kind` says why it is plain).
pub(crate) fn http(
    endpoint: &str,
    timeout: Duration,
    kind: Kind,
) -> Result<Channel, reqwest::Error> {
    // No trust roots: a plain channel never verifies a certificate, and loading the system's
    // would fail the mount on an image without ca-certificates (minimal VMs, containers).
    let no_roots = std::iter::empty::<reqwest::Certificate>();
    Ok(Channel {
        client: builder(timeout).tls_certs_only(no_roots).build()?,
        base: format!("http://{endpoint}/computeMetadata/v1/"),
        kind,
    })
}

/// The URL host for HTTPS, and the address to resolve it to when the endpoint is an IP.
fn https_host(endpoint: &str) -> (String, Option<SocketAddr>) {
    let (host, port) = match endpoint.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && port.parse::<u16>().is_ok() => {
            (host, port.parse::<u16>().ok())
        }
        _ => (endpoint, None),
    };
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
    match ip {
        Some(ip) => {
            let port = port.unwrap_or(443);
            let host =
                if port == 443 { SERVER_NAME.to_string() } else { format!("{SERVER_NAME}:{port}") };
            (host, Some(SocketAddr::new(ip, port)))
        }
        None => (endpoint.to_string(), None),
    }
}

/// An HTTPS channel presenting the credentials in `tls`.
pub(crate) fn mtls(
    endpoint: &str,
    timeout: Duration,
    tls: rustls::ClientConfig,
) -> Result<Channel, reqwest::Error> {
    let (host, resolve) = https_host(endpoint);
    let mut builder = builder(timeout).tls_backend_preconfigured(tls);
    if let Some(addr) = resolve {
        builder = builder.resolve(SERVER_NAME, addr);
    }
    Ok(Channel {
        client: builder.https_only(true).build()?,
        base: format!("https://{host}/computeMetadata/v1/"),
        kind: Kind::Mtls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_goes_to_the_mds_name_at_the_endpoint_address() {
        let ip = |s: &str| Some(s.parse::<SocketAddr>().unwrap());
        assert_eq!(
            https_host("169.254.169.254"),
            ("metadata.google.internal".into(), ip("169.254.169.254:443"))
        );
        assert_eq!(
            https_host("127.0.0.1:8443"),
            ("metadata.google.internal:8443".into(), ip("127.0.0.1:8443"))
        );
        assert_eq!(https_host("[::1]:99"), ("metadata.google.internal:99".into(), ip("[::1]:99")));
        assert_eq!(
            https_host("[fd20:ce::254]"),
            ("metadata.google.internal".into(), ip("[fd20:ce::254]:443"))
        );
        assert_eq!(https_host("mds.example:8443"), ("mds.example:8443".into(), None));
        assert_eq!(
            https_host("metadata.google.internal"),
            ("metadata.google.internal".into(), None)
        );
    }
}
