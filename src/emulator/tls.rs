//! `--tls DIR`: the HTTPS side of the emulator, as a Shielded VM's MDS offers it.
//!
//! At start it makes a CA, a server certificate for `metadata.google.internal`,
//! `169.254.169.254` and the listen address, and a client certificate, and writes `DIR/root.crt`
//! and `DIR/client.key` (private key, then certificate, one PEM file) as the guest agent does.
//! Connections that open with a TLS record get HTTPS that requires a client certificate signed
//! by that CA and currently accepted; anything else gets the plain HTTP MDS, as a real VM serves
//! both (port 80 and 443 there, one port here).
//!
//! Rotation (`POST /emulator/tls/rotate`) writes new client credentials; the old ones stay
//! accepted for a grace period, then are refused: new handshakes fail, and a kept-alive
//! connection made with them is closed at its next request. Files are replaced by rename, so a
//! reader never sees half a file. Key bytes are never logged.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hyper::Method;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore};
use serde::Deserialize;
use serde_json::json;

use super::http::{Request, Response, JSON};
use crate::upstream::mtls::{CLIENT_FILE, ROOT_FILE, SERVER_NAME};

/// How long replaced client credentials stay valid unless the rotation says otherwise.
const DEFAULT_GRACE: Duration = Duration::from_secs(60);

/// The TLS side of a running emulator.
pub(crate) struct Tls {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
    acceptor: tokio_rustls::TlsAcceptor,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("dir", &self.dir).finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct State {
    /// Client certificates accepted now: (DER, generation, refused after).
    clients: Vec<(CertificateDer<'static>, u64, Option<Instant>)>,
    generation: u64,
    https_requests: u64,
    http_requests: u64,
    refused_handshakes: u64,
    /// The SNI name of the last accepted handshake, if it sent one.
    last_server_name: Option<String>,
}

impl State {
    fn accepts(&self, cert: &[u8], now: Instant) -> bool {
        self.clients
            .iter()
            .any(|(der, _, until)| der.as_ref() == cert && until.is_none_or(|u| now < u))
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("--tls: {what}: {e}")
}

impl Tls {
    /// Makes the CA and certificates for an emulator listening on `addr`, and writes the
    /// client's files into `dir` (created if missing).
    pub(crate) fn create(dir: &Path, addr: SocketAddr) -> Result<Tls, String> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| err(&dir.display().to_string(), e))?;
        let ca_key = KeyPair::generate().map_err(|e| err("CA key", e))?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name.push(DnType::CommonName, "metadatafs-emulator MDS root");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| err("CA certificate", e))?;
        let ca = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().map_err(|e| err("server key", e))?;
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])
            .map_err(|e| err("server certificate", e))?;
        params.distinguished_name.push(DnType::CommonName, SERVER_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        for ip in server_ips(addr.ip()) {
            params.subject_alt_names.push(SanType::IpAddress(ip));
        }
        let server_cert =
            params.signed_by(&server_key, &ca).map_err(|e| err("server certificate", e))?;

        let provider = crate::upstream::mtls::crypto_provider();
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).map_err(|e| err("CA certificate", e))?;
        let state = Arc::new(Mutex::new(State::default()));
        let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| err("client verifier", e))?;
        let verifier = Arc::new(CurrentClients { inner, state: state.clone() });
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err("TLS versions", e))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(vec![server_cert.der().clone(), ca_cert.der().clone()], key)
            .map_err(|e| err("server certificate", e))?;
        // No resumption: a resumed session skips the client certificate check, and rotated-out
        // credentials must be refused at every new connection.
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        let tls = Tls {
            dir: dir.to_path_buf(),
            ca,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
            state,
        };
        write_file(&dir.join(ROOT_FILE), ca_cert.pem().as_bytes(), 0o644)?;
        tls.rotate(Duration::ZERO)?;
        Ok(tls)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn acceptor(&self) -> &tokio_rustls::TlsAcceptor {
        &self.acceptor
    }

    /// New client credentials, written to `client.key`; the ones before stay accepted for
    /// `grace`. Returns the new generation.
    fn rotate(&self, grace: Duration) -> Result<u64, String> {
        let key = KeyPair::generate().map_err(|e| err("client key", e))?;
        let generation = {
            let mut st = lock(&self.state);
            st.generation += 1;
            st.generation
        };
        let mut params = CertificateParams::default();
        let name = format!("metadatafs-emulator client {generation}");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.ca).map_err(|e| err("client certificate", e))?;
        let pem = format!("{}{}", key.serialize_pem(), cert.pem());
        // Accepted before it is written, and written before the old ones are refused, as the
        // guest agent's overlap does: a client that reads the files at any moment holds
        // credentials that work, and one whose credentials were refused finds new ones on disk.
        lock(&self.state).clients.push((cert.der().clone(), generation, None));
        write_file(&self.dir.join(CLIENT_FILE), pem.as_bytes(), 0o600)?;
        let mut st = lock(&self.state);
        let until = Instant::now() + grace;
        for (_, _, old) in st.clients.iter_mut().filter(|(_, g, _)| *g < generation) {
            *old = Some(old.map_or(until, |o| o.min(until)));
        }
        Ok(generation)
    }

    /// Whether a request on a connection that presented `cert` may be answered.
    pub(crate) fn admit(&self, cert: Option<&[u8]>) -> bool {
        cert.is_none_or(|cert| lock(&self.state).accepts(cert, Instant::now()))
    }

    /// Counts an MDS request by transport (control requests are not counted).
    pub(crate) fn count(&self, https: bool) {
        let mut st = lock(&self.state);
        match https {
            true => st.https_requests += 1,
            false => st.http_requests += 1,
        }
    }

    /// Records an accepted handshake's SNI name (`None`: the client sent none, as for an IP).
    pub(crate) fn accepted(&self, server_name: Option<&str>) {
        lock(&self.state).last_server_name = server_name.map(String::from);
    }

    pub(crate) fn refused(&self) {
        lock(&self.state).refused_handshakes += 1;
    }

    /// `/emulator/tls…` control endpoints.
    pub(crate) fn control(&self, req: &Request) -> Response {
        let route = req.path.strip_prefix("/emulator/tls").unwrap_or("");
        match (route, &req.method) {
            ("" | "/", &Method::GET) => ok(self.describe()),
            ("/rotate", &Method::POST) => {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Spec {
                    grace_ms: Option<u64>,
                }
                let spec = match req.body.iter().all(u8::is_ascii_whitespace) {
                    true => Ok(Spec { grace_ms: None }),
                    false => serde_json::from_slice::<Spec>(&req.body),
                };
                let grace = match spec {
                    Ok(spec) => spec.grace_ms.map_or(DEFAULT_GRACE, Duration::from_millis),
                    Err(e) => return bad(&format!("rotate: {e}")),
                };
                match self.rotate(grace) {
                    Ok(generation) => ok(json!({"generation": generation,
                                                "grace_ms": grace.as_millis() as u64})),
                    Err(e) => Response::plain(500, JSON, json!({"error": e}).to_string()),
                }
            }
            ("/expire", &Method::POST) => {
                let mut st = lock(&self.state);
                let before = st.clients.len();
                st.clients.retain(|(_, _, until)| until.is_none());
                ok(json!({ "expired": before - st.clients.len() }))
            }
            ("" | "/" | "/rotate" | "/expire", _) => {
                Response::plain(405, JSON, json!({"error": "method not allowed"}).to_string())
            }
            _ => {
                Response::plain(404, JSON, json!({"error": "no such control endpoint"}).to_string())
            }
        }
    }

    fn describe(&self) -> serde_json::Value {
        let st = lock(&self.state);
        let now = Instant::now();
        let accepted: Vec<_> = st
            .clients
            .iter()
            .filter(|(_, _, until)| until.is_none_or(|u| now < u))
            .map(|(_, generation, _)| generation)
            .collect();
        json!({
            "dir": self.dir.display().to_string(),
            "generation": st.generation,
            "accepted_generations": accepted,
            "https_requests": st.https_requests,
            "http_requests": st.http_requests,
            "refused_handshakes": st.refused_handshakes,
            "last_server_name": st.last_server_name,
        })
    }
}

/// The answer to `/emulator/tls…` on an emulator started without `--tls`.
pub(crate) fn not_enabled() -> Response {
    Response::plain(
        404,
        JSON,
        json!({"error": "the emulator was started without --tls"}).to_string(),
    )
}

fn ok(v: serde_json::Value) -> Response {
    Response::plain(200, JSON, v.to_string())
}

fn bad(msg: &str) -> Response {
    Response::plain(400, JSON, json!({ "error": msg }).to_string())
}

/// The MDS address, the listen address, and loopback when listening on every address.
fn server_ips(listen: IpAddr) -> Vec<IpAddr> {
    let mut ips = vec![IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254))];
    if listen.is_unspecified() {
        ips.extend([IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]);
    } else if !ips.contains(&listen) {
        ips.push(listen);
    }
    ips
}

/// Write then rename, so a reader sees the old file or the new one, never a mix.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let temp = path.with_file_name(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    };
    write().map_err(|e| err(&path.display().to_string(), e))
}

/// The CA's verdict, then whether this certificate is still accepted (not rotated out).
#[derive(Debug)]
struct CurrentClients {
    inner: Arc<dyn ClientCertVerifier>,
    state: Arc<Mutex<State>>,
}

impl ClientCertVerifier for CurrentClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self.inner.verify_client_cert(end_entity, intermediates, now)?;
        if !lock(&self.state).accepts(end_entity, Instant::now()) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
