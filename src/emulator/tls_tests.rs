//! Rotation and its control endpoints, without a socket.

use super::*;

fn request(method: Method, path: &str, body: &str) -> Request {
    Request {
        method,
        path: path.into(),
        query: Vec::new(),
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    }
}

fn json(response: Response) -> (u16, serde_json::Value) {
    (response.status, serde_json::from_slice(&response.body).unwrap())
}

#[test]
fn rotation_accepts_the_new_writes_it_and_refuses_the_old_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("new/creds");
    let tls = Tls::create(&creds, "127.0.0.1:0".parse().unwrap()).unwrap();
    let first = std::fs::read(creds.join(CLIENT_FILE)).unwrap();
    let cert = |pem: &[u8]| CertificateDer::from_pem_slice(pem).unwrap().to_vec();
    use rustls::pki_types::pem::PemObject;
    assert!(tls.admit(Some(&cert(&first))) && tls.admit(None));

    let (status, body) = json(tls.control(&request(Method::POST, "/emulator/tls/rotate", "")));
    assert_eq!((status, &body["generation"], &body["grace_ms"]), (200, &2.into(), &60000.into()));
    let second = std::fs::read(creds.join(CLIENT_FILE)).unwrap();
    assert_ne!(first, second);
    assert!(tls.admit(Some(&cert(&first))), "inside the grace period");
    assert!(tls.admit(Some(&cert(&second))));
    let (_, state) = json(tls.control(&request(Method::GET, "/emulator/tls", "")));
    assert_eq!(state["accepted_generations"], serde_json::json!([1, 2]));

    let (_, body) = json(tls.control(&request(Method::POST, "/emulator/tls/expire", "")));
    assert_eq!(body, serde_json::json!({ "expired": 1 }));
    assert!(!tls.admit(Some(&cert(&first))));
    assert!(tls.admit(Some(&cert(&second))));

    let rotate = |body: &str| tls.control(&request(Method::POST, "/emulator/tls/rotate", body));
    assert_eq!(rotate(r#"{"grace_ms": 0}"#).status, 200);
    assert!(!tls.admit(Some(&cert(&second))), "no grace");
    assert_eq!(rotate(r#"{"grace": 1}"#).status, 400);
    assert_eq!(rotate("nonsense").status, 400);
    assert_eq!(tls.control(&request(Method::GET, "/emulator/tls/rotate", "")).status, 405);
    assert_eq!(tls.control(&request(Method::GET, "/emulator/tls/nope", "")).status, 404);
    assert_eq!(not_enabled().status, 404);
}

#[test]
fn the_server_certificate_names_the_mds_and_the_listen_address() {
    let ips = server_ips("10.1.2.3".parse().unwrap());
    assert_eq!(ips, ["169.254.169.254".parse::<IpAddr>().unwrap(), "10.1.2.3".parse().unwrap()]);
    assert_eq!(server_ips("0.0.0.0".parse().unwrap()).len(), 3);
    assert_eq!(server_ips("169.254.169.254".parse().unwrap()).len(), 1);
}

#[test]
fn an_unwritable_directory_is_a_one_line_error_naming_it() {
    let err = Tls::create(Path::new("/proc/no/such"), "127.0.0.1:0".parse().unwrap()).unwrap_err();
    assert!(err.starts_with("--tls: /proc/no/such:") && !err.contains('\n'), "{err}");
}
