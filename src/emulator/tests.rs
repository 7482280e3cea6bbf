//! The handler's rules as a table of cases, no socket (metadata-api.md section in each comment).

use std::time::Duration;

use hyper::Method;

use super::fixture::{parse, BUILTIN};
use super::handler::handle;
use super::http::{Request, Response};
use super::state::{Action, State};

pub(super) const T0: u64 = 1_800_000_000_000;
const V1: &str = "/computeMetadata/v1";

pub(super) fn state() -> State {
    let tree = parse(BUILTIN, "built-in").unwrap();
    State::new(tree, Duration::from_secs(3600), Duration::from_secs(300), T0)
}

pub(super) fn md(target: &str) -> Request {
    Request::get(&format!("{V1}{target}")).header("Metadata-Flavor", "Google")
}

pub(super) fn respond(st: &mut State, req: &Request) -> Response {
    match handle(st, req, T0).action {
        Action::Respond(r) => r,
        other => panic!("{} {}: expected a response, got {other:?}", req.method, req.path),
    }
}

/// (request, status, body: exact, or a prefix when it ends with '…').
#[test]
fn table() {
    let no_flavor = |t: &str| Request::get(&format!("{V1}{t}"));
    let cases: Vec<(Request, u16, &str)> = vec![
        // §1.2 / §2.1: the detection ping needs no header.
        (Request::get("/"), 200, "0.1/\ncomputeMetadata/\n"),
        (Request::get("/computeMetadata/"), 200, "v1/\nv1beta1/\n"),
        // §2.1: header required, exact value.
        (no_flavor("/instance/id"), 403, "<!DOCTYPE html>…"),
        (no_flavor("/instance/id").header("Metadata-Flavor", "google"), 403, "<!DOCTYPE…"),
        // §2.3
        (md("/instance/id").header("X-Forwarded-For", "1.2.3.4"), 403, "<!DOCTYPE…"),
        // §3.1 listings
        (md("/"), 200, "instance/\noslogin/\nproject/\nuniverse/\n"),
        (md("/project/"), 200, "attributes/\nnumeric-project-id\nproject-id\n"),
        (md("/instance/disks/"), 200, "0/\n1/\n"),
        (md("/instance/licenses/0/"), 200, "id\n"),
        (md("/instance/service-accounts/"), 200, "523926462582-compute@developer.gserviceaccount.com/\ndefault/\n"),
        (md("/instance/service-accounts/default/"), 200, "aliases\nemail\nscopes\ntoken\n"),
        (md("/instance/network-interfaces/0/forwarded-ips/"), 200, ""),
        // values
        (md("/instance/id"), 200, "5737554347302044216"),
        (md("/project/numeric-project-id"), 200, "523926462582"),
        (md("/instance/attributes/empty-value"), 200, ""),
        (md("/instance/service-accounts/default/aliases"), 200, "default\n"),
        (md("/instance/network-interfaces/0/dns-servers"), 200, "169.254.169.254\n"),
        (md("/instance/tags"), 200, "[\"http-server\",\"ssh\"]"),
        (md("/instance/tags?alt=text"), 200, "http-server\nssh\n"),
        (md("/instance/attributes/team"), 200, "metadatafs"),
        (md("/instance/service-accounts/default/scopes?alt=json"), 200, "[\"https://www.googleapis.com/auth/devstorage.read_only\",…"),
        (md("/instance/cpu-platform?alt=json"), 200, "\"Intel Broadwell\""),
        (md("/instance/id?alt=json"), 200, "5737554347302044216"),
        (md("/project//project-id"), 200, "emulated-project"),
        (md("/project/project-id?recursive=true"), 200, "emulated-project"),
        (md("/project/project-id?unknown=1"), 200, "emulated-project"),
        // §3.2: 301 with the path as body.
        (md("/instance"), 301, "/computeMetadata/v1/instance/\n"),
        (md(""), 301, "/computeMetadata/v1/\n"),
        // §3.5: 404s
        (md("/instance/nope"), 404, "<!DOCTYPE…"),
        (md("/instance/disks/2/"), 404, "<!DOCTYPE…"),
        (md("/instance/disks/x/"), 404, "<!DOCTYPE…"),
        (md("/instance/disks/01/"), 404, "<!DOCTYPE…"),
        (md("/instance/id/"), 404, "<!DOCTYPE…"),
        (md("/instance/service-accounts/default/scopes/0"), 404, "<!DOCTYPE…"),
        (md("/instance/service-accounts/default/token/"), 404, "<!DOCTYPE…"),
        (md("/instance/service-accounts/nobody@x/token"), 404, "<!DOCTYPE…"),
        (Request::get("/computeMetadata/v2/"), 404, "<!DOCTYPE…"),
        (Request::get("/computeMetadata/v1%2F"), 404, "<!DOCTYPE…"),
        // §1.2 legacy endpoints disabled
        (Request::get("/0.1/meta-data/"), 403, "Legacy metadata endpoints are disabled. Please use the /v1/ endpoint."),
        // §3.3 / §3.4 recursive and alt
        (md("/project/?recursive=true"), 200, "{\"attributes\":{…"),
        (md("/instance/disks/?recursive=true&alt=json"), 200, "[{\"deviceName\":\"emulated-vm\",\"index\":0,…"),
        (md("/instance/disks/0/?recursive=true&alt=text"), 200, "device-name emulated-vm\nindex 0\ninterface SCSI\nmode READ_WRITE\ntype PERSISTENT-BALANCED\n"),
        (md("/instance/service-accounts/default/?recursive=true&alt=text"), 200, "aliases default\nemail 523926462582-compute@developer.gserviceaccount.com\nscopes https://www.googleapis.com/auth/devstorage.read_only\nscopes https://www.googleapis.com/auth/logging.write\n…"),
        (md("/instance/network-interfaces/0/?recursive=TRUE"), 200, "{\"accessConfigs\":[{\"externalIp\":\"203.0.113.7\",\"type\":\"ONE_TO_ONE_NAT\"}],\"dnsServers\":[\"169.254.169.254\"],\"forwardedIps\":[],…"),
        (md("/project/?recursive=xyz"), 200, "attributes/\n…"),
        (md("/project/?alt=json"), 400, "…"),
        (md("/project/?alt=text"), 400, "…"),
        // §4: wait_for_change rules that answer at once.
        (md("/project/?wait_for_change=true"), 400, "…"),
        (md("/instance/service-accounts/default/token?wait_for_change=true"), 400, "…"),
        (md("/instance/id?wait_for_change=true&last_etag=0"), 200, "5737554347302044216"),
        (md("/instance/id?wait_for_change=true&timeout_sec=1.5"), 400, "…"),
        // §5.2 tokens
        (md("/instance/service-accounts/default/token"), 200, "{\"access_token\":\"ya29.emulated.…"),
        (md("/instance/service-accounts/default/token?scopes=x&enforce_scopes=false"), 400, "…"),
        (md("/instance/service-accounts/default/token?scopes=x&enforce_scopes=true"), 400, "…"),
        (md("/instance/service-accounts/default/token?scopes=x"), 200, "{\"access_token\":…"),
        // §5.3 identity
        (md("/instance/service-accounts/default/identity"), 400, "non-empty audience parameter required"),
        (md("/instance/service-accounts/default/identity?audience="), 400, "non-empty audience parameter required"),
        (md("/instance/service-accounts/default/identity?audience=a"), 200, "eyJ…"),
        // §6 guest attributes (enabled in the built-in fixture)
        (md("/instance/guest-attributes/"), 200, "hostkeys/\n"),
        (md("/instance/guest-attributes/hostkeys/ssh-ed25519"), 200, "AAAAC3Nz…"),
        (md("/instance/guest-attributes/ns").body("x").method(Method::PUT), 400, "…"),
        (md("/instance/guest-attributes/n.s/k").body("x").method(Method::PUT), 400, "…"),
        (md("/instance/guest-attributes/ns/k/").body("x").method(Method::PUT), 400, "…"),
        (md("/instance/guest-attributes/ns/k").method(Method::DELETE), 404, "<!DOCTYPE…"),
        (md("/instance/id").body("x").method(Method::PUT), 405, "<!DOCTYPE…"),
        (Request::get("/emulator/nope"), 404, "{\"error\":…"),
    ];
    for (req, status, body) in cases {
        let mut st = state();
        let r = respond(&mut st, &req);
        let what = format!("{} {}?{:?}", req.method, req.path, req.query);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        match body.strip_suffix('…') {
            Some(prefix) => assert!(r.text().starts_with(prefix), "{what}: {:?}", r.text()),
            None => assert_eq!(r.text(), body, "{what}"),
        }
        if !req.path.starts_with("/emulator") {
            assert_eq!(r.header("metadata-flavor"), Some("Google"), "{what}");
            assert_eq!(r.header("server"), Some("Metadata Server for VM"), "{what}");
        }
    }
}
