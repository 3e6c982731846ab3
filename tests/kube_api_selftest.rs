//! Self-test of the fake Kubernetes API server (`tests/common/kube_api.rs`), driven by the real
//! kube-rs client exactly as the daemon uses it: kubeconfig loading, list, get, merge and
//! strategic merge patches, raw watches and the kube-runtime watcher, 410 Expired, 403 Forbidden
//! and an unreachable server. Only the `start_in` case needs root (a network namespace).

mod common;

use common::kube_api::FakeApi;
use common::{temp_dir, Netns};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams, WatchEvent, WatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use serde_json::json;
use std::future::Future;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// Bound for every single await in these tests.
const STEP: Duration = Duration::from_secs(15);

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {STEP:?}"))
}

/// An `Api<Node>` built from the kubeconfig file the fake server writes.
async fn nodes_api(fake: &FakeApi) -> Api<Node> {
    let dir = temp_dir("kubeconfig");
    let path = dir.path().join("kubeconfig");
    fake.kubeconfig(&path);
    let kc = Kubeconfig::read_from(&path).expect("kubeconfig parses");
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("kube config loads");
    assert_eq!(config.cluster_url.to_string(), format!("{}/", fake.url()));
    Api::all(kube::Client::try_from(config).expect("kube client"))
}

fn api_error(e: kube::Error) -> kube::error::ErrorResponse {
    match e {
        kube::Error::Api(resp) => resp,
        other => panic!("expected an API error status, got {other:?}"),
    }
}

fn condition_types(node: &Node) -> Vec<String> {
    let conds = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    conds.map_or(Vec::new(), |c| c.iter().map(|c| c.type_.clone()).collect())
}

#[tokio::test]
async fn list_get_and_patch() {
    let fake = FakeApi::start_local();
    fake.add_node("node-a", Ipv4Addr::new(192, 0, 2, 1), Some("10.244.1.0/24"));
    fake.add_node("node-b", Ipv4Addr::new(192, 0, 2, 2), None);
    let api = nodes_api(&fake).await;

    let list = bounded("list", api.list(&ListParams::default().limit(500)))
        .await
        .expect("list nodes");
    let names: Vec<_> = list.items.iter().map(|n| n.metadata.name.clone()).collect();
    assert_eq!(names, [Some("node-a".into()), Some("node-b".into())]);
    assert_eq!(
        list.metadata.resource_version,
        Some(fake.resource_version().to_string())
    );
    let a = &list.items[0];
    let spec = a.spec.as_ref().expect("spec");
    assert_eq!(spec.pod_cidr.as_deref(), Some("10.244.1.0/24"));
    assert_eq!(spec.pod_cidrs, Some(vec!["10.244.1.0/24".to_owned()]));
    let addrs = a
        .status
        .as_ref()
        .and_then(|s| s.addresses.clone())
        .expect("addresses");
    assert!(addrs
        .iter()
        .any(|x| x.type_ == "InternalIP" && x.address == "192.0.2.1"));
    assert!(addrs
        .iter()
        .any(|x| x.type_ == "Hostname" && x.address == "node-a"));
    assert_eq!(condition_types(a), ["Ready"]);
    assert!(list.items[1]
        .spec
        .as_ref()
        .is_none_or(|s| s.pod_cidr.is_none()));

    let b = bounded("get", api.get("node-b")).await.expect("get node-b");
    assert_eq!(
        b.metadata.labels.expect("labels")["kubernetes.io/hostname"],
        "node-b"
    );
    let missing = api_error(
        bounded("get missing", api.get("nope"))
            .await
            .expect_err("404"),
    );
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));

    // Merge patch of annotations: stored, resourceVersion bumped.
    let before = fake.resource_version();
    let pp = PatchParams::default();
    let annotate = json!({"metadata": {"annotations": {"weftnet.io/public-key": "abc="}}});
    let patched = bounded(
        "merge patch",
        api.patch("node-a", &pp, &Patch::Merge(&annotate)),
    )
    .await
    .expect("merge patch");
    assert_eq!(
        patched.metadata.annotations.expect("annotations")["weftnet.io/public-key"],
        "abc="
    );
    assert_eq!(fake.resource_version(), before + 1);
    let stored = fake.node("node-a").expect("node-a");
    assert_eq!(
        stored["metadata"]["annotations"]["weftnet.io/public-key"],
        "abc="
    );
    assert_eq!(
        stored["metadata"]["resourceVersion"],
        (before + 1).to_string()
    );

    // Strategic merge of status.conditions by type: Ready survives, NetworkUnavailable added.
    let cond = json!({"status": {"conditions": [{
        "type": "NetworkUnavailable", "status": "False", "reason": "WeftnetIsUp",
        "message": "weftnet is running on this node",
        "lastTransitionTime": "2025-01-01T00:00:00Z"}]}});
    let patched = bounded(
        "status patch",
        api.patch_status("node-a", &pp, &Patch::Strategic(&cond)),
    )
    .await
    .expect("strategic status patch");
    assert_eq!(condition_types(&patched), ["Ready", "NetworkUnavailable"]);
    // A plain merge patch replaces the list.
    let replace = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}});
    let patched = bounded(
        "merge status",
        api.patch_status("node-a", &pp, &Patch::Merge(&replace)),
    )
    .await
    .expect("merge status patch");
    assert_eq!(condition_types(&patched), ["Ready"]);
    // Status through the main resource is ignored, as by a real API server.
    let rv = fake.resource_version();
    let ignored = json!({"status": {"conditions": []}});
    let same = bounded("ignored", api.patch("node-a", &pp, &Patch::Merge(&ignored)))
        .await
        .expect("patch");
    assert_eq!(condition_types(&same), ["Ready"]);
    assert_eq!(fake.resource_version(), rv, "a no-op patch is not a change");
    // Metadata through /status is applied, spec is not (a real API server's node status
    // strategy resets only spec): weftnet writes its annotations this way, so its
    // ClusterRole needs no patch on nodes.
    let via_status = json!({
        "metadata": {"annotations": {"weftnet.io/pod-cidrs": "10.244.1.0/24"}},
        "spec": {"podCIDR": "10.99.0.0/24"},
    });
    let patched = bounded(
        "annotate via status",
        api.patch_status("node-a", &pp, &Patch::Merge(&via_status)),
    )
    .await
    .expect("metadata patch through status");
    let ann = patched.metadata.annotations.expect("annotations");
    assert_eq!(ann["weftnet.io/pod-cidrs"], "10.244.1.0/24");
    assert_eq!(
        ann["weftnet.io/public-key"], "abc=",
        "other annotations kept"
    );
    let stored = fake.node("node-a").expect("node-a");
    assert_ne!(
        stored["spec"]["podCIDR"], "10.99.0.0/24",
        "spec is not changed through /status"
    );
    // Optimistic concurrency: a stale resourceVersion in the patch is a conflict.
    let stale = json!({"metadata": {"resourceVersion": "1", "labels": {"x": "y"}}});
    let conflict = bounded("conflict", api.patch("node-a", &pp, &Patch::Merge(&stale)))
        .await
        .expect_err("409");
    assert_eq!(api_error(conflict).code, 409);
    // Server-side apply is not served, and says so.
    let apply = bounded(
        "apply",
        api.patch("node-a", &PatchParams::apply("t"), &Patch::Apply(&annotate)),
    )
    .await
    .expect_err("415");
    assert_eq!(api_error(apply).code, 415);

    let reqs = fake.requests();
    let kinds: Vec<_> = reqs
        .iter()
        .filter(|r| r.method == "PATCH")
        .map(|r| {
            (
                r.path().to_owned(),
                r.content_type.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        kinds[0],
        (
            "/api/v1/nodes/node-a".into(),
            "application/merge-patch+json".into()
        )
    );
    assert_eq!(
        kinds[1],
        (
            "/api/v1/nodes/node-a/status".into(),
            "application/strategic-merge-patch+json".into()
        )
    );
    assert_eq!(reqs[0].query("limit").as_deref(), Some("500"));
}

#[tokio::test]
async fn raw_watch_events_and_expiry() {
    let fake = FakeApi::start_local();
    fake.add_node("n1", Ipv4Addr::new(192, 0, 2, 1), None);
    let api = nodes_api(&fake).await;
    let rv = fake.resource_version().to_string();
    let wp = WatchParams::default().timeout(20);
    let mut events = bounded("watch", api.watch(&wp, &rv))
        .await
        .expect("watch")
        .boxed();

    fake.add_node("n2", Ipv4Addr::new(192, 0, 2, 2), None);
    fake.update_node("n1", |n| n["metadata"]["labels"]["role"] = json!("edge"));
    assert!(fake.delete_node("n2"));
    let mut seen = Vec::new();
    for _ in 0..3 {
        let ev = bounded("watch event", events.try_next())
            .await
            .expect("event")
            .expect("open");
        seen.push(match ev {
            WatchEvent::Added(n) => format!("ADDED {}", n.metadata.name.unwrap_or_default()),
            WatchEvent::Modified(n) => format!("MODIFIED {}", n.metadata.name.unwrap_or_default()),
            WatchEvent::Deleted(n) => format!("DELETED {}", n.metadata.name.unwrap_or_default()),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(seen, ["ADDED n2", "MODIFIED n1", "DELETED n2"]);
    let w = fake
        .requests()
        .into_iter()
        .find(|r| r.is_watch())
        .expect("watch request");
    assert_eq!(w.query("resourceVersion"), Some(rv.clone()));

    // Resuming from before the retained history: a 410 Expired event.
    fake.expire_history();
    let mut old = bounded("old watch", api.watch(&wp, &rv))
        .await
        .expect("watch")
        .boxed();
    match bounded("410", old.try_next()).await.expect("event") {
        Some(WatchEvent::Error(e)) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410 Expired, got {other:?}"),
    }
    // Resuming from the current version still works.
    let now = fake.resource_version().to_string();
    let mut cur = bounded("watch", api.watch(&wp, &now))
        .await
        .expect("watch")
        .boxed();
    fake.add_node("n3", Ipv4Addr::new(192, 0, 2, 3), None);
    match bounded("event", cur.try_next()).await.expect("event") {
        Some(WatchEvent::Added(n)) => assert_eq!(n.metadata.name.as_deref(), Some("n3")),
        other => panic!("expected ADDED n3, got {other:?}"),
    }
}

#[tokio::test]
async fn runtime_watcher_sees_add_modify_delete() {
    let fake = FakeApi::start_local();
    fake.add_node("w1", Ipv4Addr::new(192, 0, 2, 1), Some("10.244.1.0/24"));
    let api = nodes_api(&fake).await;
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut next = async || {
        bounded("watcher event", stream.try_next())
            .await
            .expect("watcher ok")
            .expect("watcher open")
    };
    assert!(matches!(next().await, watcher::Event::Init));
    match next().await {
        watcher::Event::InitApply(n) => assert_eq!(n.metadata.name.as_deref(), Some("w1")),
        other => panic!("expected InitApply w1, got {other:?}"),
    }
    assert!(matches!(next().await, watcher::Event::InitDone));

    fake.add_node("w2", Ipv4Addr::new(192, 0, 2, 2), None);
    match next().await {
        watcher::Event::Apply(n) => assert_eq!(n.metadata.name.as_deref(), Some("w2")),
        other => panic!("expected Apply w2, got {other:?}"),
    }
    let pp = PatchParams::default();
    let patch = json!({"metadata": {"annotations": {"weftnet.io/pod-cidr": "10.244.9.0/24"}}});
    bounded("patch", api.patch("w2", &pp, &Patch::Merge(&patch)))
        .await
        .expect("patch");
    match next().await {
        watcher::Event::Apply(n) => {
            assert_eq!(
                n.metadata.annotations.expect("annotations")["weftnet.io/pod-cidr"],
                "10.244.9.0/24"
            )
        }
        other => panic!("expected Apply w2 (modified), got {other:?}"),
    }
    fake.delete_node("w1");
    match next().await {
        watcher::Event::Delete(n) => assert_eq!(n.metadata.name.as_deref(), Some("w1")),
        other => panic!("expected Delete w1, got {other:?}"),
    }
}

#[tokio::test]
async fn forbidden_and_down() {
    let fake = FakeApi::start_local();
    fake.add_node("f1", Ipv4Addr::new(192, 0, 2, 1), None);
    let api = nodes_api(&fake).await;

    fake.set_forbidden(true);
    let e = api_error(
        bounded("list", api.list(&ListParams::default()))
            .await
            .expect_err("403"),
    );
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert!(
        e.message.contains("cannot list resource \"nodes\""),
        "{}",
        e.message
    );
    let pp = PatchParams::default();
    let p = json!({"status": {"conditions": []}});
    let e = bounded("patch", api.patch_status("f1", &pp, &Patch::Merge(&p)))
        .await
        .expect_err("403");
    let e = api_error(e);
    assert!(
        e.message.contains("nodes \"f1\" is forbidden"),
        "{}",
        e.message
    );
    assert!(
        e.message.contains("cannot patch resource \"nodes/status\""),
        "{}",
        e.message
    );
    fake.set_forbidden(false);

    // Down: an open watch is cut, and new requests fail to connect.
    let rv = fake.resource_version().to_string();
    let mut w = bounded("watch", api.watch(&WatchParams::default(), &rv))
        .await
        .expect("watch")
        .boxed();
    fake.set_down(true);
    let cut = bounded("watch cut", w.next()).await;
    assert!(
        !matches!(cut, Some(Ok(_))),
        "watch still delivering: {cut:?}"
    );
    let e = bounded("list down", api.list(&ListParams::default()))
        .await
        .expect_err("down");
    assert!(
        !matches!(e, kube::Error::Api(_)),
        "expected a connection error, got {e:?}"
    );
    assert!(
        TcpStream::connect(fake.addr()).is_err(),
        "connection not refused while down"
    );

    fake.set_down(false);
    let list = bounded("list up", api.list(&ListParams::default()))
        .await
        .expect("list again");
    assert_eq!(list.items.len(), 1);
}

/// Minimal HTTP GET from inside `netns` (a thread that enters it), returning the raw response.
fn get_in_netns(netns: &Netns, addr: SocketAddr, path: &str) -> std::io::Result<String> {
    let ns = format!("/var/run/netns/{}", netns.name());
    let path = path.to_owned();
    std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let f = std::fs::File::open(ns)?;
        // SAFETY: setns on a valid namespace fd; only this thread changes namespace.
        if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .join()
    .map_err(|_| std::io::Error::other("client thread panicked"))?
}

#[test]
fn listens_inside_a_network_namespace() {
    let ns = Netns::new("kapi");
    let fake = FakeApi::start_in(&ns, Ipv4Addr::LOCALHOST.into());
    fake.add_node("in-ns", Ipv4Addr::new(192, 0, 2, 9), None);
    let answer = get_in_netns(&ns, fake.addr(), "/api/v1/nodes").expect("GET inside the netns");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("\"NodeList\"") && answer.contains("in-ns"),
        "{answer}"
    );
    assert!(
        TcpStream::connect_timeout(&fake.addr(), Duration::from_secs(1)).is_err(),
        "the listener must not be in the root namespace"
    );
    // Down and up again re-creates the listener in the same namespace.
    fake.set_down(true);
    assert!(get_in_netns(&ns, fake.addr(), "/api/v1/nodes").is_err());
    fake.set_down(false);
    let answer = get_in_netns(&ns, fake.addr(), "/api/v1/nodes/in-ns").expect("GET after up");
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.contains("192.0.2.9"),
        "{answer}"
    );
    let missing = get_in_netns(&ns, fake.addr(), "/api/v1/nodes/nope").expect("GET");
    assert!(
        missing.starts_with("HTTP/1.1 404") && missing.contains("\"NotFound\""),
        "{missing}"
    );
}

#[tokio::test]
async fn watch_timeout_bookmark_and_initial_events() {
    let fake = FakeApi::start_local();
    fake.add_node("b1", Ipv4Addr::new(192, 0, 2, 1), None);
    let api = nodes_api(&fake).await;

    // timeoutSeconds ends the stream, after a bookmark carrying the current version.
    let rv = fake.resource_version().to_string();
    let wp = WatchParams::default().timeout(1);
    let events: Vec<_> = bounded("timed watch", async {
        api.watch(&wp, &rv)
            .await
            .expect("watch")
            .collect::<Vec<_>>()
            .await
    })
    .await;
    match events.as_slice() {
        [Ok(WatchEvent::Bookmark(b))] => assert_eq!(b.metadata.resource_version, rv),
        other => panic!("expected one bookmark, got {other:?}"),
    }

    // sendInitialEvents: ADDED for what exists, then the initial-events-end bookmark.
    let wp = WatchParams::default().initial_events().timeout(5);
    let mut s = bounded("streaming list", api.watch(&wp, ""))
        .await
        .expect("watch")
        .boxed();
    match bounded("initial", s.try_next()).await.expect("event") {
        Some(WatchEvent::Added(n)) => assert_eq!(n.metadata.name.as_deref(), Some("b1")),
        other => panic!("expected ADDED b1, got {other:?}"),
    }
    match bounded("end marker", s.try_next()).await.expect("event") {
        Some(WatchEvent::Bookmark(b)) => {
            assert_eq!(b.metadata.annotations["k8s.io/initial-events-end"], "true")
        }
        other => panic!("expected the initial-events-end bookmark, got {other:?}"),
    }
}
