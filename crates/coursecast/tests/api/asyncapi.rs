//! `docs/asyncapi.yaml` describes the Socket.IO events the server really handles and
//! emits: per namespace, its operations name exactly the events of
//! `realtime::catalog` (which every handler registration and emit goes through), and
//! the server's source registers or emits no event name outside that catalog. (That
//! the document is valid AsyncAPI is checked by the official parser:
//! scripts/asyncapi-validate, run by scripts/test.)

use std::collections::BTreeSet;

use coursecast::realtime::Namespace;
use serde_json::Value;

use crate::helpers::repo_root;

fn document() -> Value {
    let text = std::fs::read_to_string(repo_root().join("docs/asyncapi.yaml")).expect("docs/asyncapi.yaml");
    serde_norway::from_str(&text).expect("docs/asyncapi.yaml parses")
}

/// Follows a local `$ref` (`#/a/b/c`), and the `$ref` of what it points at.
fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    let Some(reference) = node.get("$ref").and_then(Value::as_str) else { return node };
    let pointer = reference.strip_prefix('#').unwrap_or_else(|| panic!("not a local $ref: {reference}"));
    let target = doc.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref: {reference}"));
    resolve(doc, target)
}

/// Every `$ref` anywhere in `node`.
fn refs<'a>(node: &'a Value, out: &mut Vec<&'a Value>) {
    match node {
        Value::Object(map) => {
            if map.contains_key("$ref") {
                out.push(node);
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// The event names of the operations on `channel` with `action` (`receive`: client
/// -> server; `send`: server -> client).
fn events(doc: &Value, channel: &str, action: &str) -> BTreeSet<String> {
    let wanted = format!("#/channels/{channel}");
    let operations = doc["operations"].as_object().expect("operations");
    operations
        .values()
        .filter(|op| op["channel"]["$ref"] == wanted.as_str() && op["action"] == action)
        .flat_map(|op| op["messages"].as_array().expect("operation messages").iter())
        .map(|message| resolve(doc, message)["name"].as_str().expect("a message name").to_owned())
        .collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|name| (*name).to_owned()).collect()
}

#[test]
fn asyncapi_names_exactly_the_events_of_each_namespace() {
    let doc = document();
    assert_eq!(doc["asyncapi"].as_str().map(|v| v.starts_with("3.")), Some(true), "an AsyncAPI 3 document");
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for node in all {
        resolve(&doc, node);
    }

    let channels = doc["channels"].as_object().expect("channels");
    let mut described = BTreeSet::new();
    for (key, channel) in channels {
        let address = channel["address"].as_str().expect("a channel address");
        let namespace = Namespace::from_path(address).unwrap_or_else(|| panic!("{address} is not a namespace"));
        described.insert(address);
        let catalog = namespace.events();
        assert_eq!(events(&doc, key, "receive"), names(catalog.client), "client -> server events of {address}");
        assert_eq!(events(&doc, key, "send"), names(catalog.server), "server -> client events of {address}");
    }
    let namespaces: BTreeSet<_> = Namespace::ALL.iter().map(|ns| ns.path()).collect();
    assert_eq!(described, namespaces, "every namespace has a channel");
}

#[test]
fn the_server_names_socket_events_only_through_the_catalog() {
    // A literal in `.on("…")` / `.emit("…")` would be an event the catalog (and so the
    // AsyncAPI document) does not know about.
    let mut offenders = Vec::new();
    let mut stack = vec![repo_root().join("crates/coursecast/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("a source folder") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                let text = std::fs::read_to_string(&path).expect("a source file");
                for (n, line) in text.lines().enumerate() {
                    if [".emit(\"", ".on(\"", ".emit_with_ack(\""].iter().any(|call| line.contains(call)) {
                        offenders.push(format!("{}:{}: {}", path.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(offenders.is_empty(), "socket event names outside realtime/catalog.rs:\n{}", offenders.join("\n"));
}
