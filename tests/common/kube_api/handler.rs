//! The API semantics of the fake server: routing of core/v1 Node requests, list, get, watch
//! set-up, merge and strategic merge patches, list and watch of the other collections
//! (Pods, Namespaces, NetworkPolicies), and Kubernetes Status errors.

use super::{Request, Shared, State, FORBIDDEN_USER, RESOURCES, WATCH_TIMEOUT_CAP};
use serde_json::{json, Map, Value};
use std::time::{Duration, Instant};

pub(super) enum Reply {
    Full(u16, Value),
    Watch(Watch),
}

pub(super) struct Watch {
    pub(super) initial: Vec<Value>,
    pub(super) from: u64,
    pub(super) deadline: Instant,
    pub(super) bookmarks: bool,
    pub(super) name: Option<String>,
    /// The collection watched (`nodes`, `pods`, ...) and its object kind.
    pub(super) resource: &'static str,
    pub(super) kind: &'static str,
}

fn status(code: u16, reason: &str, message: String) -> Reply {
    Reply::Full(
        code,
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason, "code": code,
        }),
    )
}

pub(super) fn expired() -> Value {
    json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "reason": "Expired", "code": 410, "message": "too old resource version",
    }})
}

pub(super) fn handle(shared: &Shared, req: Request) -> Reply {
    let mut st = shared.lock();
    st.requests.push(req.clone());
    let parts: Vec<&str> = req.path().trim_matches('/').split('/').collect();
    let other = match parts.as_slice() {
        ["api", "v1", r] | ["apis", "networking.k8s.io", "v1", r] => {
            RESOURCES.iter().find(|(n, _)| n == r).copied()
        }
        _ => None,
    };
    if let Some((resource, kind)) = other {
        return collection(&st, &req, resource, kind);
    }
    let (name, sub) = match parts.as_slice() {
        ["api", "v1", "nodes"] => (None, None),
        ["api", "v1", "nodes", n] => (Some(*n), None),
        ["api", "v1", "nodes", n, "status"] => (Some(*n), Some("status")),
        _ => {
            return status(
                404,
                "NotFound",
                "the server could not find the requested resource".into(),
            )
        }
    };
    let verb = match (req.method.as_str(), name) {
        ("GET", None) if req.is_watch() => "watch",
        ("GET", None) => "list",
        ("GET", Some(_)) => "get",
        ("PATCH", Some(_)) => "patch",
        (m, _) => {
            return status(
                405,
                "MethodNotAllowed",
                format!("the server does not allow method {m} here"),
            )
        }
    };
    if st.forbidden {
        let resource = if sub.is_some() {
            "nodes/status"
        } else {
            "nodes"
        };
        let what = name.map_or("nodes".to_owned(), |n| format!("nodes {n:?}"));
        return status(
            403,
            "Forbidden",
            format!("{what} is forbidden: User \"{FORBIDDEN_USER}\" cannot {verb} resource \"{resource}\" in API group \"\" at the cluster scope"),
        );
    }
    let name_filter = req.query("fieldSelector").and_then(|f| {
        f.strip_prefix("metadata.name")
            .map(|v| v.trim_start_matches('=').to_owned())
    });
    match (verb, name) {
        ("list", _) => {
            let items: Vec<Value> = st
                .nodes
                .iter()
                .filter(|(n, _)| name_filter.as_ref().is_none_or(|f| f == *n))
                .map(|(_, v)| v.clone())
                .collect();
            Reply::Full(
                200,
                json!({"kind": "NodeList", "apiVersion": "v1",
                       "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
            )
        }
        ("watch", _) => watch(&st, &req, name_filter),
        ("get", Some(n)) => match st.nodes.get(n) {
            Some(node) => Reply::Full(200, node.clone()),
            None => not_found(n),
        },
        ("patch", Some(n)) => match patch(&mut st, n, sub.is_some(), &req) {
            Ok(node) => {
                shared.changed.notify_all();
                Reply::Full(200, node)
            }
            Err(reply) => reply,
        },
        _ => status(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
        ),
    }
}

/// List or watch of a collection other than Nodes (cluster-wide, no selectors).
fn collection(st: &State, req: &Request, resource: &'static str, kind: &'static str) -> Reply {
    if req.method != "GET" {
        return status(
            405,
            "MethodNotAllowed",
            format!("the fake server only lists and watches {resource}"),
        );
    }
    if st.forbidden {
        return status(
            403,
            "Forbidden",
            format!("{resource} is forbidden: User \"{FORBIDDEN_USER}\" cannot list resource \"{resource}\" at the cluster scope"),
        );
    }
    let items: Vec<Value> = st
        .objects
        .get(resource)
        .map(|m| m.values().cloned().collect())
        .unwrap_or_default();
    if req.is_watch() {
        return watch_of(st, req, None, resource, kind, items);
    }
    Reply::Full(
        200,
        json!({"kind": format!("{kind}List"), "apiVersion": "v1",
               "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
    )
}

fn not_found(name: &str) -> Reply {
    status(404, "NotFound", format!("nodes {name:?} not found"))
}

fn watch(st: &State, req: &Request, name: Option<String>) -> Reply {
    let items: Vec<Value> = st
        .nodes
        .iter()
        .filter(|(n, _)| name.as_ref().is_none_or(|f| f == *n))
        .map(|(_, v)| v.clone())
        .collect();
    watch_of(st, req, name, "nodes", "Node", items)
}

fn watch_of(
    st: &State,
    req: &Request,
    name: Option<String>,
    resource: &'static str,
    kind: &'static str,
    items: Vec<Value>,
) -> Reply {
    let secs = req
        .query("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(WATCH_TIMEOUT_CAP, |t| {
            Duration::from_secs(t).min(WATCH_TIMEOUT_CAP)
        });
    let added = |_: &State| -> Vec<Value> {
        items
            .iter()
            .map(|v| json!({"type": "ADDED", "object": v}))
            .collect()
    };
    let mut w = Watch {
        initial: Vec::new(),
        from: st.rv,
        deadline: Instant::now() + secs,
        bookmarks: req.query("allowWatchBookmarks").as_deref() == Some("true"),
        name: name.clone(),
        resource,
        kind,
    };
    let rv = req.query("resourceVersion").unwrap_or_default();
    if req.query("sendInitialEvents").as_deref() == Some("true") {
        w.initial = added(st);
        w.initial.push(
            json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": "v1",
            "metadata": {"resourceVersion": st.rv.to_string(),
                         "annotations": {"k8s.io/initial-events-end": "true"}}}}),
        );
    } else if rv.is_empty() || rv == "0" {
        w.initial = added(st);
    } else {
        let Ok(from) = rv.parse::<u64>() else {
            return status(
                400,
                "BadRequest",
                format!("invalid resource version {rv:?}"),
            );
        };
        if from < st.history_start {
            w.initial = vec![expired()];
            w.deadline = Instant::now();
        } else {
            w.from = from;
        }
    }
    Reply::Watch(w)
}

fn patch(st: &mut State, name: &str, status_sub: bool, req: &Request) -> Result<Value, Reply> {
    let ctype = req.content_type.as_deref().unwrap_or("");
    let strategic = match ctype.split(';').next().unwrap_or("").trim() {
        "application/merge-patch+json" => false,
        "application/strategic-merge-patch+json" => true,
        other => {
            return Err(status(
                415,
                "UnsupportedMediaType",
                format!(
                    "the body of the request was in an unknown format ({other:?}); accepted: \
                 application/merge-patch+json, application/strategic-merge-patch+json"
                ),
            ))
        }
    };
    let body: Value = serde_json::from_str(&req.body)
        .map_err(|e| status(400, "BadRequest", format!("invalid JSON patch body: {e}")))?;
    if !body.is_object() {
        return Err(status(
            400,
            "BadRequest",
            "the patch must be a JSON object".into(),
        ));
    }
    let old = st.nodes.get(name).cloned().ok_or_else(|| not_found(name))?;
    if let Some(want) = body
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        if Some(want)
            != old
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
        {
            return Err(status(
                409,
                "Conflict",
                format!(
                "Operation cannot be fulfilled on nodes {name:?}: the object has been modified; \
                 please apply your changes to the latest version and try again"),
            ));
        }
    }
    let mut new = old.clone();
    merge(&mut new, &body, strategic, &[]);
    // A subresource changes only its part: status for /status, everything else otherwise.
    let keep = if status_sub { "spec" } else { "status" };
    for key in [keep, "kind", "apiVersion"] {
        match old.get(key) {
            Some(v) => new[key] = v.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove(key);
                }
            }
        }
    }
    for key in ["name", "uid", "creationTimestamp", "resourceVersion"] {
        new["metadata"][key] = old["metadata"][key].clone();
    }
    if new == old {
        return Ok(old);
    }
    let rv = st.bump();
    new["metadata"]["resourceVersion"] = json!(rv.to_string());
    st.nodes.insert(name.to_owned(), new.clone());
    st.push_event("MODIFIED", new.clone());
    Ok(new)
}

/// RFC 7386 merge of `patch` into `target`; with `strategic`, the lists `status.conditions`
/// and `status.addresses` are merged by their `type` key (as Kubernetes does) instead of
/// replaced, `{"type": T, "$patch": "delete"}` removes an element, and other `$` directives
/// are ignored.
fn merge(target: &mut Value, patch: &Value, strategic: bool, path: &[&str]) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Some(t) = target.as_object_mut() else {
        return;
    };
    for (k, v) in p {
        if strategic && k.starts_with('$') {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        let entry = t.entry(k.clone()).or_insert(Value::Null);
        let keyed =
            strategic && path == ["status"] && matches!(k.as_str(), "conditions" | "addresses");
        match (keyed, v.as_array()) {
            (true, Some(items)) => merge_by_type(entry, items),
            _ => {
                let mut sub = path.to_vec();
                sub.push(k);
                merge(entry, v, strategic, &sub);
            }
        }
    }
}

fn merge_by_type(target: &mut Value, items: &[Value]) {
    let mut list = target.as_array().cloned().unwrap_or_default();
    for item in items {
        let ty = item.get("type").and_then(Value::as_str);
        let pos = ty.and_then(|ty| {
            list.iter()
                .position(|e| e.get("type").and_then(Value::as_str) == Some(ty))
        });
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                list.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => merge(&mut list[i], item, true, &[]),
            (None, false) => {
                let mut fresh = Value::Null;
                merge(&mut fresh, item, true, &[]);
                list.push(fresh);
            }
        }
    }
    *target = Value::Array(list);
}
