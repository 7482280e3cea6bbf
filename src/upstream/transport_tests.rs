//! The channel: where HTTPS goes, and auto's fallback to plain HTTP and back, against
//! in-process emulators behind a switchable TCP proxy.

use std::net::SocketAddr;

use super::*;

/// Forwards each new connection to whichever address it is pointed at now.
struct Proxy {
    addr: String,
    target: Arc<Mutex<SocketAddr>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let target = Arc::new(Mutex::new(target));
        let to = target.clone();
        tokio::spawn(async move {
            loop {
                let (mut inbound, _) = listener.accept().await.unwrap();
                let target = *to.lock().unwrap();
                tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Proxy { addr, target }
    }

    fn point_at(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_when_https_fails_and_comes_back_when_it_works_again() {
    use crate::emulator::{Emulator, EmulatorConfig};
    use crate::upstream::mds::{HttpConfig, HttpMds, Mds};
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    let tls_config = EmulatorConfig { tls: Some(creds.clone()), ..Default::default() };
    let with_tls = Emulator::start(tls_config).unwrap();
    let plain = Emulator::start(EmulatorConfig::default()).unwrap();
    let proxy = Proxy::start(plain.addr()).await;
    let mtls = Settings { mode: Mode::Auto, dir: creds };
    let config = HttpConfig {
        endpoint: proxy.addr.clone(),
        timeout: Duration::from_secs(5),
        max_value: 1 << 20,
        mtls,
    };
    let mds = HttpMds::new(config).unwrap();
    let transport = mds.transport().clone();
    assert_eq!(transport.kind(), Kind::Mtls, "both files exist");

    // A server that speaks no TLS: the first read falls back and is served over HTTP.
    assert_eq!(mds.get("project/project-id").await.unwrap(), "emulated-project");
    assert_eq!(transport.kind(), Kind::HttpFallback);
    assert_eq!(mds.transport_kind().map(Kind::name), Some("http-fallback"));
    assert!(!transport.reprobe().await, "HTTPS still fails");
    assert_eq!(transport.kind(), Kind::HttpFallback);

    proxy.point_at(with_tls.addr());
    assert!(transport.reprobe().await);
    assert_eq!(transport.kind(), Kind::Mtls);
    assert_eq!(mds.get("project/project-id").await.unwrap(), "emulated-project");
}

#[test]
fn mtls_on_without_files_names_the_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings { mode: Mode::On, dir: dir.path().to_path_buf() };
    let err = Transport::new("127.0.0.1:1", Duration::from_secs(1), settings).unwrap_err();
    let root = dir.path().join("root.crt");
    assert_eq!(
        err.to_string(),
        format!("mtls=on: no mutual TLS credentials: {} is missing", root.display())
    );
    let off = Transport::new("127.0.0.1:1", Duration::from_secs(1), Settings::off()).unwrap();
    assert_eq!(off.kind(), Kind::Http);
}
