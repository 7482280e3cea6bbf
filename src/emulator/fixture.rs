//! Fixtures: the JSON a real VM returns for `GET /computeMetadata/v1/?recursive=true&alt=json`,
//! turned into the tree the emulator serves (metadata-api.md §3.3).
//!
//! Rules, each from §3.1/§3.3:
//! - server-defined keys arrive camelCase and are served dashed (`numericProjectId` →
//!   `numeric-project-id`); attribute keys, guest-attribute namespaces/keys and service-account emails
//!   are user-defined and kept verbatim;
//! - arrays of objects (`disks`, `networkInterfaces`, `accessConfigs`, `licenses`) are directories
//!   `0/`, `1/`, …; `forwardedIps` and `ipAliases` are indexed too (their items are leaves);
//!   any other array of strings/numbers is a value list leaf (`tags`, `scopes`, `aliases`, …);
//! - numbers keep their exact digits (serde_json's `arbitrary_precision`).
//!
//! A malformed fixture is refused with a message naming the JSON path (`instance.disks[0]`) or the
//! line and column of a syntax error.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::tree::{dashed, verbatim_children, Child, Leaf, Node};

/// The fixture used without `--fixture`.
pub(crate) const BUILTIN: &str = include_str!("builtin.json");

/// Arrays whose scalar items are served as indexed leaves rather than as one value list.
const INDEXED_SCALARS: [&str; 3] = ["forwarded-ips", "ip-aliases", "ipv6-forwarded-ips"];
/// Names that are value lists even when empty (an empty array elsewhere is an empty directory).
const VALUE_LISTS: [&str; 6] =
    ["tags", "scopes", "aliases", "dns-servers", "target-instance-ips", "ipv6-dns-servers"];
/// Arrays whose items must be objects.
const OBJECT_ARRAYS: [&str; 4] = ["disks", "licenses", "network-interfaces", "access-configs"];

#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub(crate) struct FixtureError {
    origin: String,
    message: String,
}

/// Loads the fixture at `path`, or the built-in one.
pub(crate) fn load(path: Option<&Path>) -> Result<Node, FixtureError> {
    match path {
        None => parse(BUILTIN, "built-in fixture"),
        Some(p) => {
            let origin = format!("fixture {}", p.display());
            let text = std::fs::read_to_string(p)
                .map_err(|e| FixtureError { origin: origin.clone(), message: e.to_string() })?;
            // Editors on Windows save JSON with a byte-order mark; it is not part of the JSON.
            parse(text.strip_prefix('\u{feff}').unwrap_or(&text), &origin)
        }
    }
}

pub(crate) fn parse(text: &str, origin: &str) -> Result<Node, FixtureError> {
    let fail = |message: String| FixtureError { origin: origin.to_string(), message };
    let value: Value = serde_json::from_str(text).map_err(|e| {
        let full = e.to_string();
        let what = full.split(" at line ").next().unwrap_or(&full).to_string();
        fail(format!("line {} column {}: {what}", e.line(), e.column()))
    })?;
    let Value::Object(root) = &value else {
        return Err(fail("expected a JSON object at the top level".into()));
    };
    for required in ["instance", "project"] {
        match root.get(required) {
            Some(Value::Object(_)) => {}
            Some(_) => return Err(fail(format!("{required}: expected an object"))),
            None => return Err(fail(format!("{required}: missing"))),
        }
    }
    let mut tree = convert(&value, &mut Vec::new(), "").map_err(fail)?;
    // Real dumps always carry `guestAttributes` (§6); PUTs need the directory to exist.
    if let Node::Object(root) = &mut tree {
        if let Some(Child { node: Node::Object(instance), .. }) = root.get_mut("instance") {
            instance.entry("guest-attributes".into()).or_insert_with(|| Child {
                json_key: "guestAttributes".into(),
                node: Node::empty_dir(),
            });
        }
    }
    Ok(tree)
}

/// Converts `value` found at `dir` (path names of its ancestors and itself) and `shown` (its JSON
/// path for messages).
fn convert(value: &Value, dir: &mut Vec<String>, shown: &str) -> Result<Node, String> {
    let name = dir.last().map(String::as_str).unwrap_or("");
    let at = |msg: &str| format!("{shown}: {msg}");
    let user_key = dir.len() >= 2 && verbatim_children(&dir[..dir.len() - 1]);
    if !user_key && OBJECT_ARRAYS.contains(&name) && !value.is_array() {
        return Err(at("expected an array of objects"));
    }
    if !user_key && name == "attributes" && !value.is_object() {
        return Err(at("expected an object"));
    }
    match value {
        Value::Null => Err(at("null is not a metadata value")),
        Value::Bool(b) => Ok(Node::Leaf(Leaf::Raw(b.to_string()))),
        Value::Number(n) => Ok(Node::Leaf(Leaf::Raw(n.to_string()))),
        Value::String(s) => Ok(Node::Leaf(Leaf::Str(s.clone()))),
        Value::Object(map) => {
            let verbatim = verbatim_children(dir);
            let mut children = BTreeMap::new();
            for (key, v) in map {
                let path_name = if verbatim { key.clone() } else { dashed(key) };
                let child_shown =
                    if shown.is_empty() { key.clone() } else { format!("{shown}.{key}") };
                check_child(dir, v).map_err(|m| format!("{child_shown}: {m}"))?;
                if path_name.is_empty() || path_name.contains('/') {
                    return Err(format!("{child_shown}: not a usable metadata key"));
                }
                dir.push(path_name.clone());
                let node = convert(v, dir, &child_shown);
                dir.pop();
                let child = Child { json_key: key.clone(), node: node? };
                if children.insert(path_name.clone(), child).is_some() {
                    return Err(format!("{child_shown}: duplicate key {path_name:?}"));
                }
            }
            Ok(Node::Object(children))
        }
        Value::Array(items) => convert_array(items, dir, shown),
    }
}

fn convert_array(items: &[Value], dir: &mut Vec<String>, shown: &str) -> Result<Node, String> {
    let name = dir.last().cloned().unwrap_or_default();
    let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_));
    if OBJECT_ARRAYS.contains(&name.as_str()) || items.iter().any(Value::is_object) {
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_shown = format!("{shown}[{i}]");
            if !item.is_object() {
                return Err(format!("{item_shown}: expected an object"));
            }
            dir.push(i.to_string());
            let node = convert(item, dir, &item_shown);
            dir.pop();
            out.push(node?);
        }
        return Ok(Node::Array(out));
    }
    if let Some(i) = items.iter().position(|v| !scalar(v)) {
        return Err(format!("{shown}[{i}]: expected a string or a number"));
    }
    let texts = items.iter().map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    if INDEXED_SCALARS.contains(&name.as_str()) {
        let leaves = items.iter().map(|v| match v {
            Value::String(s) => Node::Leaf(Leaf::Str(s.clone())),
            other => Node::Leaf(Leaf::Raw(other.to_string())),
        });
        return Ok(Node::Array(leaves.collect()));
    }
    if items.is_empty() && !VALUE_LISTS.contains(&name.as_str()) {
        return Ok(Node::Array(Vec::new()));
    }
    Ok(Node::Leaf(Leaf::List(texts.collect())))
}

/// Shape rules for well-known keys, checked before descending so messages name the child.
fn check_child(dir: &[String], v: &Value) -> Result<(), String> {
    let parent = dir.last().map(String::as_str).unwrap_or("");
    match parent {
        "attributes" if !v.is_string() => Err("expected a string".into()),
        "service-accounts" if !v.is_object() => Err("expected an object".into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse(text, "fixture f.json").unwrap_err().to_string()
    }

    #[test]
    fn builtin_parses_and_maps_names() {
        let tree = parse(BUILTIN, "built-in").unwrap();
        assert_eq!(tree.text_at(&["project", "numeric-project-id"]).unwrap(), "523926462582");
        assert_eq!(tree.text_at(&["instance", "id"]).unwrap(), "5737554347302044216");
        assert!(tree.get(&["instance", "disks", "1", "device-name"]).is_some());
        assert!(tree
            .get(&["instance", "network-interfaces", "0", "access-configs", "0", "external-ip"])
            .is_some());
        assert_eq!(tree.text_at(&["instance", "attributes", "empty-value"]).unwrap(), "");
        assert!(tree.get(&["instance", "forwarded-ips"]).is_none());
        let nic = tree.get(&["instance", "network-interfaces", "0"]).unwrap();
        assert_eq!(
            nic.listing(&[]),
            "access-configs/\ndns-servers\nforwarded-ips/\ngateway\nip\nip-aliases/\nmac\nmtu\n\
             network\nsubnetmask\ntarget-instance-ips\n"
        );
    }

    #[test]
    fn roundtrips_to_the_same_json() {
        let tree = parse(BUILTIN, "built-in").unwrap();
        let mut out = String::new();
        tree.json(None, &mut out);
        let a: Value = serde_json::from_str(&out).unwrap();
        let b: Value = serde_json::from_str(BUILTIN).unwrap();
        assert_eq!(a, b);
        assert!(out.contains("\"id\":5737554347302044216,"));
    }

    #[test]
    fn custom_keys_stay_verbatim() {
        let t = parse(
            r#"{"instance":{"attributes":{"sshKeys":"a","my-key":"b"},"serviceAccounts":{"a@b.c":{"email":"a@b.c"}}},"project":{}}"#,
            "x",
        )
        .unwrap();
        assert!(t.get(&["instance", "attributes", "sshKeys"]).is_some());
        assert!(t.get(&["instance", "service-accounts", "a@b.c", "email"]).is_some());
    }

    #[test]
    fn malformed_fixtures_name_the_problem() {
        let cases = [
            (
                "{\n  \"instance\": {\n    \"id\": ,\n",
                "fixture f.json: line 3 column 11: expected value",
            ),
            ("[]", "fixture f.json: expected a JSON object at the top level"),
            (r#"{"project":{}}"#, "fixture f.json: instance: missing"),
            (r#"{"instance":[],"project":{}}"#, "fixture f.json: instance: expected an object"),
            (
                r#"{"instance":{"disks":[{"index":0},"x"]},"project":{}}"#,
                "fixture f.json: instance.disks[1]: expected an object",
            ),
            (
                r#"{"instance":{"disks":"x"},"project":{}}"#,
                "fixture f.json: instance.disks: expected an array of objects",
            ),
            (
                r#"{"instance":{"attributes":{"a":1}},"project":{}}"#,
                "fixture f.json: instance.attributes.a: expected a string",
            ),
            (
                r#"{"instance":{"tags":["a",["b"]]},"project":{}}"#,
                "fixture f.json: instance.tags[1]: expected a string or a number",
            ),
            (
                r#"{"instance":{"name":null},"project":{}}"#,
                "fixture f.json: instance.name: null is not a metadata value",
            ),
            (
                r#"{"instance":{"serviceAccounts":{"default":"x"}},"project":{}}"#,
                "fixture f.json: instance.serviceAccounts.default: expected an object",
            ),
        ];
        for (text, want) in cases {
            assert_eq!(err(text), want, "for {text}");
        }
    }

    #[test]
    fn missing_file_is_named() {
        let e = load(Some(Path::new("/nonexistent/x.json"))).unwrap_err().to_string();
        assert!(e.starts_with("fixture /nonexistent/x.json: "), "{e}");
    }
}
