//! The table: query names → the request they make, or the errno they fail with.

use super::*;

const ACCOUNT: &str = "instance/service-accounts/default";
const RO: &str = "https://www.googleapis.com/auth/devstorage.read_only";
const LOG: &str = "https://www.googleapis.com/auth/logging.write";

/// What looking up `name` in `dir` asks for, with the base listed as `base`.
fn ask(dir: &str, name: &str, base: Base) -> Result<Target> {
    let query = parse(name)?.expect("a query name");
    target(dir, &query, base, true)
}

fn scoped(scopes: &[&str], form: Form) -> Result<Target, i32> {
    let scopes = scopes.iter().map(|s| s.to_string()).collect();
    Ok(Target::Scoped { account_dir: ACCOUNT.into(), scopes, form })
}

fn plain(path: &str) -> Result<Target, i32> {
    Ok(Target::Plain { path: path.into() })
}

#[test]
fn names_map_to_one_canonical_request_or_an_errno() {
    use Base::*;
    let wait = |path: &str, base: &str, limit: Option<u64>| -> Result<Target, i32> {
        let limit = limit.map(Duration::from_secs);
        Ok(Target::Wait { path: path.into(), base: base.into(), limit })
    };
    let identity =
        |path: &str| -> Result<Target, i32> { Ok(Target::Identity { path: path.into() }) };
    let einval = Err(libc::EINVAL);
    let table: Vec<(&str, &str, Base, Result<Target, i32>)> = vec![
        // Scope sets: any spelling of one set is one request.
        (ACCOUNT, "token?scopes=devstorage.read_only", Value, scoped(&[RO], Form::Json)),
        (
            ACCOUNT,
            "access_token?scopes=logging.write,devstorage.read_only,logging.write",
            Value,
            scoped(&[RO, LOG], Form::Bare),
        ),
        (
            ACCOUNT,
            "authorization?scopes=https:%2F%2Fwww.googleapis.com%2Fauth%2Flogging.write",
            Value,
            scoped(&[LOG], Form::Header),
        ),
        (ACCOUNT, "token?scopes=", Value, einval.clone()),
        (ACCOUNT, "token?scopes=a%20b", Value, einval.clone()),
        (ACCOUNT, "token?scopes=x&alt=json", Value, einval.clone()),
        (ACCOUNT, "token?wait_for_change=true", Value, einval.clone()),
        // Identity: audience required; `%2F` is a slash inside a value.
        (
            ACCOUNT,
            "identity?audience=https:%2F%2Fexample.com&format=full",
            Unlisted,
            identity(&format!("{ACCOUNT}/identity?audience=https%3A%2F%2Fexample.com&format=full")),
        ),
        (
            ACCOUNT,
            "identity?licenses=true&format=full&audience=a",
            Unlisted,
            identity(&format!("{ACCOUNT}/identity?audience=a&format=full&licenses=TRUE")),
        ),
        (ACCOUNT, "identity?format=full", Unlisted, einval.clone()),
        (ACCOUNT, "identity?audience=", Unlisted, einval.clone()),
        (ACCOUNT, "identity?audience=a&format=fancy", Unlisted, einval.clone()),
        // Dumps of the root and of directories; values.
        ("", "?recursive=true&alt=json", Dir, plain("?alt=json&recursive=true")),
        (
            "instance",
            "attributes?recursive=true",
            Dir,
            plain("instance/attributes/?recursive=true"),
        ),
        (
            "instance/attributes",
            "?recursive=TRUE",
            Dir,
            plain("instance/attributes/?recursive=true"),
        ),
        ("instance", "tags?alt=text", Value, plain("instance/tags?alt=text")),
        ("instance", "nope?alt=text", Unlisted, Err(libc::ENOENT)),
        // Waiting reads.
        (
            "instance",
            "maintenance-event?wait_for_change=true&timeout_sec=60",
            Value,
            wait(
                "instance/maintenance-event?timeout_sec=60&wait_for_change=true",
                "instance/maintenance-event",
                Some(60),
            ),
        ),
        (
            "instance",
            "attributes?recursive=true&wait_for_change=1&last_etag=abc0",
            Dir,
            wait(
                "instance/attributes/?last_etag=abc0&recursive=true&wait_for_change=true",
                "instance/attributes/",
                None,
            ),
        ),
        ("instance", "zone?timeout_sec=5", Value, einval.clone()),
        ("instance", "zone?wait_for_change=true&timeout_sec=1.5", Value, einval.clone()),
        ("instance", "zone?wait_for_change=true&timeout_sec=3601", Value, einval.clone()),
        ("instance", "zone?wait_for_change=true&last_etag=a-b", Value, einval.clone()),
        // The allow-list, and what a name may never carry.
        ("instance", "zone?foo=bar", Value, einval.clone()),
        ("instance", "zone?recursive=true&recursive=true", Value, einval.clone()),
        ("instance", "zone?=x", Value, einval.clone()),
        ("instance", "zone?recursive", Value, einval.clone()),
        ("instance", "zone?", Value, einval.clone()),
        ("instance", "zone?recursive=true&", Value, einval.clone()),
        ("instance", "zone?alt=xml", Value, einval.clone()),
        ("instance", "zone?recursive=maybe", Value, einval.clone()),
        ("instance", "zone?scopes=x", Value, einval.clone()),
        ("instance", "zone?audience=x", Value, einval.clone()),
        ("instance", "zo%6Ee?alt=text", Value, einval.clone()),
        ("instance", "..?alt=text", Value, einval.clone()),
        (ACCOUNT, "identity?audience=a%0Ab", Unlisted, einval.clone()),
        (ACCOUNT, "identity?audience=a%2F..%2Fb", Unlisted, einval.clone()),
        (ACCOUNT, "identity?audience=%zz", Unlisted, einval.clone()),
        (ACCOUNT, "identity?audience=%2", Unlisted, einval.clone()),
        (ACCOUNT, "identity?audience=%FF", Unlisted, einval.clone()),
        (ACCOUNT, "identity?audience=%+5", Unlisted, einval.clone()),
        (ACCOUNT, "identity?aud%69ence=x", Unlisted, einval.clone()),
    ];
    for (dir, name, base, expected) in table {
        let got = ask(dir, name, base).map_err(|e| e.errno());
        assert_eq!(got, expected, "{dir} / {name}");
    }
}

#[test]
fn scoped_tokens_need_the_option() {
    let query = parse("token?scopes=x").unwrap().unwrap();
    let err = target(ACCOUNT, &query, Base::Value, false).unwrap_err();
    assert_eq!(err.errno(), libc::EACCES);
    assert_eq!(parse("plain-name").unwrap(), None);
}

#[test]
fn scope_sets_are_canonical_and_sent_with_enforce_scopes() {
    let set = canonical_scopes(["logging.write", " devstorage.read_only", RO, ""]).unwrap();
    assert_eq!(set, [RO, LOG]);
    assert_eq!(
        scoped_token_path(ACCOUNT, &set),
        format!(
            "{ACCOUNT}/token?enforce_scopes=true&scopes=https%3A%2F%2Fwww.googleapis.com%2Fauth%2F\
             devstorage.read_only,https%3A%2F%2Fwww.googleapis.com%2Fauth%2Flogging.write"
        )
    );
    assert!(canonical_scopes([" ", ""]).is_err());
}
