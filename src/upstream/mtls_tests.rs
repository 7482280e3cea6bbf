//! Modes as google-auth reads them, credential files and what is wrong with them, and the
//! server check: `root.crt` alone, the name `metadata.google.internal`, whatever address.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::error::Error;
use crate::upstream::mds::{HttpConfig, HttpMds, Mds};

#[test]
fn the_option_wins_and_the_variable_reads_as_google_auth_reads_it() {
    assert_eq!(Mode::resolve(None, None), Ok(Mode::Auto));
    assert_eq!(Mode::resolve(None, Some("default")), Ok(Mode::Auto));
    assert_eq!(Mode::resolve(None, Some("STRICT")), Ok(Mode::On));
    assert_eq!(Mode::resolve(None, Some("None")), Ok(Mode::Off));
    assert_eq!(Mode::resolve(Some(Mode::Off), Some("strict")), Ok(Mode::Off));
    assert_eq!(Mode::resolve(Some(Mode::On), Some("bogus")), Ok(Mode::On));
    let err = Mode::resolve(None, Some("yes")).unwrap_err();
    assert_eq!(err, "GCE_METADATA_MTLS_MODE=yes: expected default, strict or none");
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

fn new_ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let pem = params.self_signed(&key).unwrap().pem();
    Ca { issuer: Issuer::new(params, key), pem }
}

/// (key, certificate DER, certificate PEM) for a leaf with these DNS names and IPs.
fn leaf(
    ca: &Ca,
    names: &[&str],
    ips: &[&str],
    eku: ExtendedKeyUsagePurpose,
) -> (KeyPair, rcgen::Certificate) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(ip.parse().unwrap()));
    }
    params.extended_key_usages = vec![eku];
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    (key, cert)
}

fn write_credentials(dir: &Path, root_pem: &str, client_pem: &str) -> Settings {
    std::fs::write(dir.join(ROOT_FILE), root_pem).unwrap();
    std::fs::write(dir.join(CLIENT_FILE), client_pem).unwrap();
    Settings { mode: Mode::On, dir: dir.to_path_buf() }
}

fn client_pem(ca: &Ca) -> String {
    let (key, cert) = leaf(ca, &[], &[], ExtendedKeyUsagePurpose::ClientAuth);
    format!("{}{}", key.serialize_pem(), cert.pem())
}

fn config_error(settings: &Settings) -> String {
    let credentials = Credentials::read(settings).unwrap();
    credentials.client_config(settings).unwrap_err().to_string()
}

#[test]
fn unusable_credentials_name_the_file_and_never_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca();
    let good = client_pem(&ca);
    let settings = write_credentials(dir.path(), &ca.pem, &good);
    assert!(Credentials::read(&settings).unwrap().client_config(&settings).is_ok());

    let settings = write_credentials(dir.path(), "not a certificate\n", &good);
    assert!(config_error(&settings).contains("root.crt: no certificate in it"));

    let cert_only = good[good.find("-----BEGIN CERTIFICATE").unwrap()..].to_string();
    let settings = write_credentials(dir.path(), &ca.pem, &cert_only);
    assert!(
        config_error(&settings).contains("client.key: no private key in it"),
        "{}",
        config_error(&settings)
    );

    let key_only = good[..good.find("-----BEGIN CERTIFICATE").unwrap()].to_string();
    let settings = write_credentials(dir.path(), &ca.pem, &key_only);
    assert!(config_error(&settings).contains("client.key: no certificate in it"));

    // Half written: refused, and the message quotes nothing from the file.
    let half = &good[..good.len() / 3];
    let settings = write_credentials(dir.path(), &ca.pem, half);
    let err = config_error(&settings);
    assert!(err.contains("client.key: a ") && err.contains("PEM"), "{err}");
    assert!(!err.contains(&half[40..60]), "{err}");

    // Another key than the certificate's: refused when read, not at the first handshake.
    let other_key = KeyPair::generate().unwrap().serialize_pem();
    let mismatched = format!("{other_key}{cert_only}");
    let settings = write_credentials(dir.path(), &ca.pem, &mismatched);
    let err = config_error(&settings);
    assert!(err.contains("client.key:"), "{err}");
    assert!(!err.contains("PRIVATE KEY") && !err.contains(&other_key[30..60]), "{err}");

    std::fs::write(dir.path().join(CLIENT_FILE), vec![b'A'; 2 << 20]).unwrap();
    let err = Credentials::read(&settings).unwrap_err().to_string();
    assert!(err.ends_with("client.key: larger than 1024 KiB: not a credentials file"), "{err}");

    std::fs::remove_file(dir.path().join(CLIENT_FILE)).unwrap();
    let err = Credentials::read(&settings).unwrap_err().to_string();
    let missing = dir.path().join("client.key");
    assert!(err.ends_with(&format!("credentials: {} is missing", missing.display())), "{err}");
}

/// A TLS server on loopback presenting `server` (chained to `ca`), requiring a client
/// certificate from `ca`, answering every request with a flavored `ok`.
async fn tls_server(ca: &Ca, server: (KeyPair, rcgen::Certificate)) -> String {
    let provider = crypto_provider();
    let mut roots = RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.pem.as_bytes()).unwrap()).unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server.0.serialize_der()));
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server.1.der().clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(socket).await else { return };
                let mut buf = vec![0u8; 4096];
                if tls.read(&mut buf).await.unwrap_or(0) > 0 {
                    let reply = "HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
                    let _ = tls.write_all(reply.as_bytes()).await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    });
    addr
}

fn mds(addr: &str, settings: Settings) -> HttpMds {
    let config = HttpConfig {
        endpoint: addr.into(),
        timeout: Duration::from_secs(3),
        max_value: 1 << 20,
        mtls: settings,
    };
    HttpMds::new(config).unwrap()
}

#[tokio::test]
async fn the_server_must_be_metadata_google_internal_whatever_address_we_connect_to() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca();
    let settings = write_credentials(dir.path(), &ca.pem, &client_pem(&ca));

    let named = leaf(&ca, &[SERVER_NAME], &[], ExtendedKeyUsagePurpose::ServerAuth);
    let addr = tls_server(&ca, named).await;
    assert_eq!(mds(&addr, settings.clone()).get("x").await.unwrap(), "ok");

    // Valid for the very address we connect to, signed by root.crt, but not for the MDS name.
    let by_ip = leaf(&ca, &["other.example"], &["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let addr = tls_server(&ca, by_ip).await;
    match mds(&addr, settings.clone()).get("x").await {
        Err(Error::Misconfigured { reason, .. }) => {
            assert!(
                reason.contains("TLS handshake failed") && reason.contains("certificate"),
                "{reason}"
            )
        }
        other => panic!("served {other:?}"),
    }

    // Connected to by a name it is valid for: still not the MDS's name, still refused.
    let localhost = leaf(&ca, &["localhost"], &["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let addr = tls_server(&ca, localhost).await;
    let by_name = addr.replace("127.0.0.1", "localhost");
    let err = mds(&by_name, settings.clone()).get("x").await.unwrap_err();
    assert!(matches!(err, Error::Misconfigured { .. }), "{err:?}");
    // …and a name endpoint with the MDS's certificate is fine.
    let named = leaf(&ca, &[SERVER_NAME], &[], ExtendedKeyUsagePurpose::ServerAuth);
    let addr = tls_server(&ca, named).await.replace("127.0.0.1", "localhost");
    assert_eq!(mds(&addr, settings.clone()).get("x").await.unwrap(), "ok");

    // The right name, but from a CA that root.crt is not.
    let stranger = new_ca();
    let foreign =
        leaf(&stranger, &[SERVER_NAME], &["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let addr = tls_server(&ca, foreign).await;
    let err = mds(&addr, settings).get("x").await.unwrap_err();
    assert!(matches!(err, Error::Misconfigured { .. }), "{err:?}");
    assert_eq!(err.errno(), libc::EIO);
}
