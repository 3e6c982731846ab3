//! A fake Kubernetes API server for tests: the core/v1 Node resource over plain HTTP/1.1,
//! and, list and watch only, the cluster-wide collections of Pods, Namespaces and
//! networking.k8s.io/v1 NetworkPolicies (what NetworkPolicy enforcement watches).
//!
//! It serves what weftnet's Kubernetes mode uses through kube-rs (`Api<Node>` and the
//! kube-runtime watcher): list, get, watch from a resourceVersion (chunked, one JSON event per
//! line, 410 Expired when the history no longer reaches back), and JSON merge / strategic merge
//! patches of nodes and `nodes/status`. Test controls add, change and delete nodes, log every
//! request, answer 403 to everything (missing RBAC) or take the server down (unreachable API).
//!
//! One std thread accepts, one thread serves each connection (`Connection: close`, so there are
//! no idle keep-alive connections to track). [`FakeApi::start_in`] binds the listener inside a
//! network namespace, so daemons running there can reach it. Dropping the guard stops every
//! thread with bounded waits. This file holds the state and the test controls; `server` the
//! HTTP side, `handler` the API semantics (routing, watch set-up, patches).

mod handler;
mod server;

use super::Netns;
use serde_json::{json, Map, Value};
use server::{accept_loop, bind_in, query_pairs};
use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// Longest a watch stays open (the client's `timeoutSeconds` is capped to this).
pub const WATCH_TIMEOUT_CAP: Duration = Duration::from_secs(30);
/// Events kept for watches that resume from an older resourceVersion.
const HISTORY_LIMIT: usize = 10_000;
/// Read/write timeout on every connection, so no thread blocks forever on a silent peer.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_HEADER_BYTES: usize = 64 << 10;
const MAX_BODY_BYTES: usize = 4 << 20;
/// The identity named in 403 answers.
pub const FORBIDDEN_USER: &str = "system:serviceaccount:kube-system:weftnet";

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent (`/api/v1/nodes?watch=true&...`).
    pub target: String,
    pub content_type: Option<String>,
    pub body: String,
}

impl Request {
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
    /// The decoded value of query parameter `key`.
    pub fn query(&self, key: &str) -> Option<String> {
        query_pairs(&self.target)
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
    pub fn is_watch(&self) -> bool {
        matches!(self.query("watch").as_deref(), Some("true" | "1"))
    }
}

struct Event {
    rv: u64,
    /// The collection: `nodes`, `pods`, `namespaces` or `networkpolicies`.
    resource: &'static str,
    kind: &'static str,
    object: Value,
}

/// The collections served besides Nodes (list and watch), with their object kind.
pub const RESOURCES: [(&str, &str); 3] = [
    ("pods", "Pod"),
    ("namespaces", "Namespace"),
    ("networkpolicies", "NetworkPolicy"),
];

/// The static name of a served collection.
fn resource_name(r: &str) -> &'static str {
    RESOURCES
        .iter()
        .find(|(n, _)| *n == r)
        .map(|(n, _)| *n)
        .unwrap_or_else(|| panic!("the fake API server does not serve {r}"))
}

#[derive(Default)]
struct State {
    rv: u64,
    nodes: BTreeMap<String, Value>,
    /// Pods, Namespaces and NetworkPolicies by collection, then `namespace/name`.
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    history: VecDeque<Event>,
    /// Every event with a resourceVersion above this is still in `history`.
    history_start: u64,
    requests: Vec<Request>,
    forbidden: bool,
    down: bool,
    listening: bool,
    stop: bool,
    uids: u64,
    conns: BTreeMap<u64, TcpStream>,
    next_conn: u64,
}

impl State {
    fn push_event(&mut self, kind: &'static str, object: Value) {
        self.push_event_of("nodes", kind, object);
    }
    fn push_event_of(&mut self, resource: &'static str, kind: &'static str, object: Value) {
        self.history.push_back(Event {
            rv: self.rv,
            resource,
            kind,
            object,
        });
        while self.history.len() > HISTORY_LIMIT {
            if let Some(old) = self.history.pop_front() {
                self.history_start = old.rv;
            }
        }
    }
    fn bump(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }
    fn close_conns(&mut self) {
        for (_, s) in std::mem::take(&mut self.conns) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running fake API server; stops on drop.
pub struct FakeApi {
    shared: Arc<Shared>,
    addr: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
    _netns: Option<Netns>,
}

impl FakeApi {
    /// Listen on 127.0.0.1 (ephemeral port) in the test's own namespace.
    pub fn start_local() -> FakeApi {
        Self::start(None, SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0))
    }

    /// Listen on `addr` (ephemeral port) inside `netns`; `addr` must be an address of that
    /// namespace (e.g. a host's underlay address).
    pub fn start_in(netns: &Netns, addr: IpAddr) -> FakeApi {
        Self::start(Some(netns.clone()), SocketAddr::new(addr, 0))
    }

    fn start(netns: Option<Netns>, addr: SocketAddr) -> FakeApi {
        let ns_name = netns.as_ref().map(|n| n.name().to_owned());
        let listener = bind_in(ns_name.as_deref(), addr)
            .unwrap_or_else(|e| panic!("fake API server cannot listen on {addr}: {e}"));
        let addr = listener.local_addr().expect("listener address");
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 1,
                listening: true,
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        let s = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("fake-kube-accept".into())
            .spawn(move || accept_loop(s, listener, ns_name, addr))
            .expect("spawn accept thread");
        FakeApi {
            shared,
            addr,
            acceptor: Some(acceptor),
            _netns: netns,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR:PORT` (IPv6 in brackets).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Write a kubeconfig for this server (one cluster, one user with a dummy token, one
    /// context, current-context set) to `path`.
    pub fn kubeconfig(&self, path: &Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             users:\n- name: weftnet\n  user:\n    token: fake-token\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: weftnet\n    namespace: kube-system\n\
             current-context: fake\n",
            self.url()
        );
        std::fs::write(path, text)
            .unwrap_or_else(|e| panic!("cannot write kubeconfig {}: {e}", path.display()));
    }

    /// Add a Ready node with an InternalIP (and `spec.podCIDR(s)` when given); emits ADDED.
    pub fn add_node(&self, name: &str, internal_ip: impl Into<IpAddr>, pod_cidr: Option<&str>) {
        let ip = internal_ip.into();
        let mut st = self.shared.lock();
        assert!(!st.nodes.contains_key(name), "node {name} already exists");
        st.uids += 1;
        let rv = st.bump();
        let now = rfc3339(SystemTime::now());
        let mut spec = Map::new();
        if let Some(cidr) = pod_cidr {
            spec.insert("podCIDR".into(), json!(cidr));
            spec.insert("podCIDRs".into(), json!([cidr]));
        }
        let node = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "uid": format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), st.uids),
                "resourceVersion": rv.to_string(),
                "creationTimestamp": now,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64",
                },
            },
            "spec": spec,
            "status": {
                "addresses": [
                    {"type": "InternalIP", "address": ip.to_string()},
                    {"type": "Hostname", "address": name},
                ],
                "conditions": [{
                    "type": "Ready",
                    "status": "True",
                    "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": now,
                }],
            },
        });
        st.nodes.insert(name.to_owned(), node.clone());
        st.push_event("ADDED", node);
        self.shared.changed.notify_all();
    }

    /// Change a node in place (as a controller would); emits MODIFIED. Panics if missing.
    pub fn update_node(&self, name: &str, f: impl FnOnce(&mut Value)) {
        let mut st = self.shared.lock();
        let mut node = st
            .nodes
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("no node {name}"));
        f(&mut node);
        let rv = st.bump();
        node["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.nodes.insert(name.to_owned(), node.clone());
        st.push_event("MODIFIED", node);
        self.shared.changed.notify_all();
    }

    /// Delete a node; emits DELETED with its last state. False if there was none.
    pub fn delete_node(&self, name: &str) -> bool {
        let mut st = self.shared.lock();
        let Some(mut node) = st.nodes.remove(name) else {
            return false;
        };
        let rv = st.bump();
        node["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.push_event("DELETED", node);
        self.shared.changed.notify_all();
        true
    }

    /// Create or replace an object of a served collection (`pods`, `namespaces`,
    /// `networkpolicies`), keyed by its metadata's namespace and name; fills in
    /// `resourceVersion`, `uid` and `creationTimestamp` and emits ADDED or MODIFIED.
    pub fn put(&self, resource: &str, mut object: Value) {
        let resource = resource_name(resource);
        let ns = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_else(|| panic!("a {resource} object without metadata.name"))
            .to_owned();
        let key = format!("{ns}/{name}");
        let mut st = self.shared.lock();
        let old = st.objects.get(resource).and_then(|m| m.get(&key)).cloned();
        let rv = st.bump();
        let meta = &mut object["metadata"];
        meta["resourceVersion"] = json!(rv.to_string());
        match &old {
            Some(o) => {
                meta["uid"] = o["metadata"]["uid"].clone();
                meta["creationTimestamp"] = o["metadata"]["creationTimestamp"].clone();
            }
            None => {
                st.uids += 1;
                let meta = &mut object["metadata"];
                meta["uid"] = json!(format!(
                    "{:08x}-0000-4000-8000-{:012x}",
                    std::process::id(),
                    st.uids
                ));
                meta["creationTimestamp"] = json!(rfc3339(SystemTime::now()));
            }
        }
        st.objects
            .entry(resource)
            .or_default()
            .insert(key, object.clone());
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        st.push_event_of(resource, kind, object);
        self.shared.changed.notify_all();
    }

    /// Change an object of a served collection in place; emits MODIFIED. Panics if missing.
    pub fn update(&self, resource: &str, namespace: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let mut object = self
            .object(resource, namespace, name)
            .unwrap_or_else(|| panic!("no {resource} {namespace}/{name}"));
        f(&mut object);
        self.put(resource, object);
    }

    /// Delete an object of a served collection; emits DELETED. False if there was none.
    pub fn delete(&self, resource: &str, namespace: &str, name: &str) -> bool {
        let resource = resource_name(resource);
        let mut st = self.shared.lock();
        let key = format!("{namespace}/{name}");
        let Some(mut object) = st.objects.get_mut(resource).and_then(|m| m.remove(&key)) else {
            return false;
        };
        let rv = st.bump();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        st.push_event_of(resource, "DELETED", object);
        self.shared.changed.notify_all();
        true
    }

    /// An object of a served collection.
    pub fn object(&self, resource: &str, namespace: &str, name: &str) -> Option<Value> {
        let resource = resource_name(resource);
        let key = format!("{namespace}/{name}");
        self.shared
            .lock()
            .objects
            .get(resource)
            .and_then(|m| m.get(&key))
            .cloned()
    }

    pub fn node(&self, name: &str) -> Option<Value> {
        self.shared.lock().nodes.get(name).cloned()
    }

    pub fn node_names(&self) -> Vec<String> {
        self.shared.lock().nodes.keys().cloned().collect()
    }

    /// Wait up to `timeout` for node `name` to exist and satisfy `pred`; returns it then.
    pub fn wait_node(
        &self,
        name: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.lock();
        loop {
            if let Some(n) = st.nodes.get(name).filter(|n| pred(n)) {
                return Some(n.clone());
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            st = self
                .shared
                .changed
                .wait_timeout(st, left.min(Duration::from_millis(200)))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The current (global) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.lock().rv
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.lock().requests.clone()
    }

    /// Forget the event history: a watch from any older resourceVersion gets 410 Expired.
    pub fn expire_history(&self) {
        let mut st = self.shared.lock();
        st.history.clear();
        st.history_start = st.rv;
        self.shared.changed.notify_all();
    }

    /// Answer every request with 403 Forbidden (as with missing RBAC), or stop doing so.
    pub fn set_forbidden(&self, forbidden: bool) {
        self.shared.lock().forbidden = forbidden;
    }

    /// Take the server down (listener closed, so connections are refused; open connections and
    /// watches are cut) or bring it back on the same address. Returns once it is in effect.
    pub fn set_down(&self, down: bool) {
        {
            let mut st = self.shared.lock();
            st.down = down;
            if down {
                st.close_conns();
            }
            self.shared.changed.notify_all();
        }
        let ok = super::wait_until(Duration::from_secs(10), || {
            self.shared.lock().listening != down
        });
        assert!(
            ok,
            "fake API server did not go {}",
            if down { "down" } else { "up" }
        );
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        {
            let mut st = self.shared.lock();
            st.stop = true;
            st.close_conns();
            self.shared.changed.notify_all();
        }
        if let Some(h) = self.acceptor.take() {
            join_bounded(h, Duration::from_secs(10));
        }
    }
}

/// Join `h` if it finishes within `timeout`; otherwise leave it (never hang a test).
fn join_bounded(h: JoinHandle<()>, timeout: Duration) {
    if super::wait_until(timeout, || h.is_finished()) {
        let _ = h.join();
    } else {
        eprintln!("[fake-kube] a server thread did not stop within {timeout:?}; leaving it");
    }
}

/// `t` as an RFC 3339 UTC timestamp with second precision.
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
