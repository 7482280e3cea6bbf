//! Mutual TLS to the metadata server, as Shielded VMs offer it: which mode applies, reading the
//! credentials the guest agent writes, and how the server is verified.
//!
//! Invariants:
//! - The server is verified against `root.crt` alone, never the system store, and always under
//!   the name `metadata.google.internal`, whatever address is connected to (`169.254.169.254`,
//!   an endpoint override, a test's loopback port): a certificate for any other name is refused.
//! - `client.key` holds the private key (EC on GCE) and the client certificate in one PEM file,
//!   as the guest agent writes it and `curl -E` reads it. A key that does not match the
//!   certificate is refused when the file is read, not at the first handshake.
//! - Errors name the file and what is wrong with it, never its bytes: key material is never
//!   logged.
//! - One crypto provider for the process (ring: no OpenSSL, no cmake), installed as rustls'
//!   process default so that every `reqwest::Client` builds, TLS or not.
//!
//! google-auth reads `GCE_METADATA_MTLS_MODE` (`default`, `strict`, `none`; case-insensitive,
//! anything else is an error) and uses HTTPS when both files exist (`default`) or insists on it
//! (`strict`); [`Mode::resolve`] does the same, with our `mtls=` option taking precedence.

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::upstream::credfile::read_file;

/// Where the guest agent writes the credentials on Linux.
pub const DEFAULT_DIR: &str = "/run/google-mds-mtls";
/// The variable google-auth reads.
pub const MODE_ENV: &str = "GCE_METADATA_MTLS_MODE";
/// The CA the MDS certificate chains to.
pub const ROOT_FILE: &str = "root.crt";
/// The client's private key and certificate, concatenated PEM.
pub const CLIENT_FILE: &str = "client.key";
/// The name the MDS certificate is checked against.
pub const SERVER_NAME: &str = "metadata.google.internal";

/// `mtls=`: whether to talk HTTPS with mutual TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// HTTPS when both credential files exist, else plain HTTP; plain HTTP after a failed
    /// handshake (google-auth's `default`).
    Auto,
    /// HTTPS only; missing credentials are a mount-time error (`strict`).
    On,
    /// Plain HTTP (`none`).
    Off,
}

impl Mode {
    /// The `mtls=` option's spelling.
    pub fn from_option(value: &str) -> Option<Mode> {
        match value {
            "auto" => Some(Mode::Auto),
            "on" => Some(Mode::On),
            "off" => Some(Mode::Off),
            _ => None,
        }
    }

    /// The option if given, else `GCE_METADATA_MTLS_MODE` as google-auth reads it, else auto.
    pub fn resolve(option: Option<Mode>, env: Option<&str>) -> Result<Mode, String> {
        if let Some(mode) = option {
            return Ok(mode);
        }
        match env.map(str::to_ascii_lowercase).as_deref() {
            None | Some("default") => Ok(Mode::Auto),
            Some("strict") => Ok(Mode::On),
            Some("none") => Ok(Mode::Off),
            Some(_) => Err(format!(
                "{MODE_ENV}={}: expected default, strict or none",
                env.unwrap_or_default()
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::On => "on",
            Mode::Off => "off",
        })
    }
}

/// The mode and where the credentials live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    pub dir: PathBuf,
}

impl Settings {
    pub fn off() -> Settings {
        Settings { mode: Mode::Off, dir: PathBuf::from(DEFAULT_DIR) }
    }

    pub fn root_path(&self) -> PathBuf {
        self.dir.join(ROOT_FILE)
    }

    pub fn client_path(&self) -> PathBuf {
        self.dir.join(CLIENT_FILE)
    }

    /// Whether both files exist (google-auth's test for `default` mode).
    pub fn files_exist(&self) -> bool {
        self.root_path().exists() && self.client_path().exists()
    }
}

pub use crate::upstream::credfile::CredentialsError;

/// The raw bytes of both files, as read together (compared to notice a rotation).
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Credentials {
    root: Vec<u8>,
    client: Vec<u8>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials { .. }")
    }
}

impl Credentials {
    /// Both files, each a regular file of sane size (see `credfile`). Blocks only on a hung
    /// filesystem: callers read through `credfile::read_within`.
    pub(crate) fn read(settings: &Settings) -> Result<Credentials, CredentialsError> {
        Ok(Credentials {
            root: read_file(&settings.root_path())?,
            client: read_file(&settings.client_path())?,
        })
    }

    /// A client configuration that presents these credentials and trusts only this root.
    pub(crate) fn client_config(
        &self,
        settings: &Settings,
    ) -> Result<ClientConfig, CredentialsError> {
        let invalid = |path: PathBuf, reason: String| CredentialsError::Invalid { path, reason };
        let provider = crypto_provider();
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&self.root) {
            let cert = cert.map_err(|e| invalid(settings.root_path(), pem_error(&e)))?;
            roots.add(cert).map_err(|e| invalid(settings.root_path(), e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(invalid(settings.root_path(), "no certificate in it".into()));
        }
        let chain = CertificateDer::pem_slice_iter(&self.client)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(settings.client_path(), pem_error(&e)))?;
        if chain.is_empty() {
            return Err(invalid(settings.client_path(), "no certificate in it".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(&self.client)
            .map_err(|e| invalid(settings.client_path(), pem_error(&e)))?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .build()
            .map_err(|e| invalid(settings.root_path(), e.to_string()))?;
        ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(settings.root_path(), e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedName { inner }))
            // Checks that the key is usable and matches the certificate.
            .with_client_auth_cert(chain, key)
            .map(|mut config| {
                // We speak HTTP/1.1 only; say so rather than leave the server to guess.
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                config
            })
            .map_err(|e| invalid(settings.client_path(), e.to_string()))
    }
}

/// What is wrong with a PEM file, in words that quote nothing from it.
fn pem_error(e: &rustls::pki_types::pem::Error) -> String {
    use rustls::pki_types::pem::Error as Pem;
    match e {
        Pem::NoItemsFound => "no private key in it",
        Pem::MissingSectionEnd { .. } => "a PEM section has no END line (cut short?)",
        Pem::IllegalSectionStart { .. } => "a malformed PEM BEGIN line",
        Pem::Base64Decode(_) => "invalid base64 in a PEM section",
        _ => "not valid PEM",
    }
    .into()
}

/// The process's crypto provider, installed as rustls' default on first use.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| {
            // Another part of the process may have installed one already: use that.
            let _ = rustls::crypto::ring::default_provider().install_default();
            CryptoProvider::get_default()
                .cloned()
                .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
        })
        .clone()
}

/// Verifies the server as `metadata.google.internal` whatever name or address the connection
/// was made to; everything else (chain to `root.crt`, validity, signatures) is webpki's.
#[derive(Debug)]
struct PinnedName {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for PinnedName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
        self.inner.verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Why HTTPS could not be had, found in an error's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsFailure {
    pub(crate) reason: String,
    /// A verdict (a certificate refused by either side, a peer that speaks no TLS), which
    /// retrying will not change; otherwise the connection was refused or cut mid-handshake.
    pub(crate) refused: bool,
}

/// The TLS failure in an error's chain, if it is one; a refused connection counts (nothing
/// listens for HTTPS there), a timeout does not (nothing answers at all).
pub(crate) fn tls_failure(error: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
    let mut next = Some(error);
    while let Some(e) = next {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(TlsFailure { reason: tls.to_string(), refused: true });
        }
        let cut = |reason: &str| Some(TlsFailure { reason: reason.into(), refused: false });
        next = match e.downcast_ref::<std::io::Error>() {
            Some(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                return cut("connection refused");
            }
            // tokio-rustls's words for a connection closed during the handshake.
            Some(io) if io.get_ref().is_some_and(|i| i.to_string() == "tls handshake eof") => {
                return cut("the connection was closed during the TLS handshake");
            }
            // `io::Error::source` skips the error it wraps (often another io::Error around
            // the rustls one), so step into it instead.
            Some(io) => io.get_ref().map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

#[cfg(test)]
#[path = "mtls_tests.rs"]
mod tests;
