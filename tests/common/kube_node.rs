//! One Kubernetes node for end-to-end tests: `weftnet up --kubernetes` in a host
//! namespace against the fake API server, with its CNI directories, and pods wired by
//! calling the installed CNI plugin exactly as a container runtime does (and
//! registered as Pod objects in the fake API server when asked).

use super::kube_api::FakeApi;
use super::mesh::gensecret;
use super::{run_bounded, Daemon, Host, Netns, Underlay, EXEC_TIMEOUT};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// A node: its daemon and CNI directory.
pub struct KubeNode {
    pub name: String,
    pub d: Daemon,
    pub cni: PathBuf,
}

/// The `weftnet up` arguments of a Kubernetes node.
pub fn kube_args(
    node: &str,
    kubeconfig: &Path,
    secret: &Path,
    cni: &Path,
    range: Option<&str>,
) -> Vec<String> {
    let mut a = vec![
        "--kubernetes".to_string(),
        format!("--node-name={node}"),
        format!("--kubeconfig={}", kubeconfig.display()),
        format!("--secret-file={}", secret.display()),
        format!("--cni-bin-dir={}", cni.join("bin").display()),
        format!("--cni-conf-dir={}", cni.join("net.d").display()),
        format!("--cni-data-dir={}", cni.join("data").display()),
    ];
    if let Some(r) = range {
        a.push(format!("--range={r}"));
    }
    a
}

/// Runs the CNI plugin `binary` in the node namespace `node` as a container runtime
/// does: `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS` (the path of `pod`, empty when
/// there is none), `CNI_IFNAME=eth0` and `CNI_PATH=cni_path` in its environment and
/// `config` on its stdin. Returns whether it exited 0 and its JSON output (null when
/// it printed none).
pub fn run_cni_plugin(
    node: &Netns,
    binary: &Path,
    cni_path: &str,
    command: &str,
    id: &str,
    pod: Option<&Netns>,
    config: &Value,
) -> (bool, Value) {
    let netns = pod.map(|p| format!("/var/run/netns/{}", p.name()));
    let args: Vec<String> = vec![
        "-i".into(),
        format!("CNI_COMMAND={command}"),
        format!("CNI_CONTAINERID={id}"),
        format!("CNI_NETNS={}", netns.unwrap_or_default()),
        "CNI_IFNAME=eth0".to_string(),
        format!("CNI_PATH={cni_path}"),
        binary.display().to_string(),
    ];
    let mut cmd = node.command("env", &args);
    let input = serde_json::to_vec(config).expect("config JSON");
    let out = run_bounded(&mut cmd, Some(&input), EXEC_TIMEOUT);
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.success(), json)
}

/// The network config a runtime passes to `plugin`, one entry of the conflist `list`:
/// the entry with the list's `name` and `cniVersion`.
pub fn conflist_plugin(list: &Value, plugin: &Value) -> Value {
    let mut conf = plugin.clone();
    conf["name"] = list["name"].clone();
    conf["cniVersion"] = list["cniVersion"].clone();
    conf
}

/// A fake API server with its Nodes, the kubeconfig that reaches it and the cluster
/// secret: what every Kubernetes node of a test is started with.
pub struct FakeCluster {
    pub api: FakeApi,
    pub kubeconfig: PathBuf,
    pub secret: PathBuf,
    /// The Node names, in the order they were added.
    pub names: Vec<String>,
}

/// Starts the fake API server on `api_host` (at its underlay IPv4 address), adds a
/// Node per `(name, host, podCIDR)` at the host's underlay address, and writes the
/// kubeconfig and a cluster secret in `dir`. Starts no daemon.
pub fn fake_cluster(
    api_host: &Host,
    nodes: &[(&str, &Host, Option<&str>)],
    dir: &Path,
) -> FakeCluster {
    let api = FakeApi::start_in(api_host, api_host.underlay_v4().into());
    let kubeconfig = dir.join("kubeconfig");
    api.kubeconfig(&kubeconfig);
    for (name, host, cidr) in nodes {
        api.add_node(name, host.underlay_v4(), *cidr);
    }
    FakeCluster {
        api,
        kubeconfig,
        secret: gensecret(dir, "secret"),
        names: nodes.iter().map(|(n, _, _)| n.to_string()).collect(),
    }
}

/// Nodes `node1` and `node2` (podCIDRs 10.244.1.0/24 and 10.244.2.0/24) at `u`'s first
/// two hosts, the API server on the first: the cluster of the NetworkPolicy tests and
/// benchmark.
pub fn two_node_cluster(u: &Underlay, dir: &Path) -> FakeCluster {
    fake_cluster(
        u.host(0),
        &[
            ("node1", u.host(0), Some("10.244.1.0/24")),
            ("node2", u.host(1), Some("10.244.2.0/24")),
        ],
        dir,
    )
}

impl FakeCluster {
    /// Starts a [`KubeNode`] for each Node, the i-th on `hosts[i]`, with `range` and
    /// its CNI directories under `dir`. Returns at once: the nodes may not be ready.
    pub fn start_nodes(&self, hosts: &[&Host], dir: &Path, range: &str) -> Vec<KubeNode> {
        self.names
            .iter()
            .zip(hosts)
            .map(|(name, host)| {
                KubeNode::start(host, name, &self.kubeconfig, &self.secret, dir, range)
            })
            .collect()
    }
}

impl KubeNode {
    /// Starts Node `name` on `host` with its CNI directories under `dir/name`.
    pub fn start(
        host: &Host,
        name: &str,
        kubeconfig: &Path,
        secret: &Path,
        dir: &Path,
        range: &str,
    ) -> Self {
        Self::start_with(host, name, kubeconfig, secret, dir, range, &[])
    }
    /// [`KubeNode::start`] with `extra` arguments (e.g. `--ca-file`).
    pub fn start_with(
        host: &Host,
        name: &str,
        kubeconfig: &Path,
        secret: &Path,
        dir: &Path,
        range: &str,
        extra: &[String],
    ) -> Self {
        Self::start_custom(host, name, dir, &[], |cni| {
            let mut args = kube_args(name, kubeconfig, secret, cni, Some(range));
            args.extend(extra.iter().cloned());
            args
        })
    }
    /// Starts `weftnet up` for Node `name` on `host` with its CNI directories under
    /// `dir/name`, the files `conf` (name, contents) already in its `net.d` (what a
    /// node had before: another CNI's config, an older weftnet's), and the arguments
    /// `args` makes from the CNI directory (usually [`kube_args`] and more).
    pub fn start_custom(
        host: &Host,
        name: &str,
        dir: &Path,
        conf: &[(&str, String)],
        args: impl FnOnce(&Path) -> Vec<String>,
    ) -> Self {
        let cni = dir.join(name);
        let net_d = cni.join("net.d");
        std::fs::create_dir_all(&net_d).expect("net.d");
        for (file, contents) in conf {
            std::fs::write(net_d.join(file), contents).expect("earlier conflist");
        }
        let args = args(&cni);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let d = Daemon::start(host, &args, "");
        KubeNode {
            name: name.to_string(),
            d,
            cni,
        }
    }
    pub fn ns(&self) -> &Netns {
        self.d.netns()
    }
    pub fn status(&self) -> Value {
        self.d.status_json()
    }
    /// The installed CNI plugin.
    pub fn plugin(&self) -> PathBuf {
        self.cni.join("bin").join("weftnet")
    }
    /// The conflist weftnet writes.
    pub fn conflist(&self) -> PathBuf {
        self.cni.join("net.d").join("00-weftnet.conflist")
    }
    /// The plugin's network config as a runtime passes it: the conflist's plugin entry
    /// with `name` and `cniVersion` copied in.
    pub fn net_config(&self) -> Value {
        let text = std::fs::read_to_string(self.conflist()).expect("conflist");
        let list: Value = serde_json::from_str(&text).expect("conflist JSON");
        conflist_plugin(&list, &list["plugins"][0])
    }
    /// Runs the installed plugin in this node's namespace, as the runtime does.
    pub fn cni(
        &self,
        command: &str,
        id: &str,
        pod: Option<&Netns>,
        config: &Value,
    ) -> (bool, Value) {
        let cni_path = self.cni.join("bin").display().to_string();
        run_cni_plugin(
            self.ns(),
            &self.plugin(),
            &cni_path,
            command,
            id,
            pod,
            config,
        )
    }
    /// ADD for a new pod; returns its IPv4 address.
    pub fn add_pod(&self, id: &str, pod: &Netns) -> String {
        self.add_pod_addrs(id, pod).swap_remove(0)
    }
    /// ADD for a new pod; returns its addresses (IPv4 first, then IPv6 on a dual-stack
    /// node), as the result lists them.
    pub fn add_pod_addrs(&self, id: &str, pod: &Netns) -> Vec<String> {
        let (ok, result) = self.cni("ADD", id, Some(pod), &self.net_config());
        assert!(ok, "{}: CNI ADD failed: {result}", self.name);
        let addrs: Vec<String> = result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str())
            .map(|a| a.split('/').next().unwrap_or(a).to_string())
            .collect();
        assert!(!addrs.is_empty(), "no address in the ADD result {result}");
        addrs
    }
}

/// The Pod object of a running pod on `node` with `ip`, `labels` and named container
/// ports `(name, protocol, port)`.
pub fn pod_object(
    namespace: &str,
    name: &str,
    node: &str,
    ip: &str,
    labels: &[(&str, &str)],
    ports: &[(&str, &str, u16)],
) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let ports: Vec<Value> = ports
        .iter()
        .map(|(n, p, port)| json!({"name": n, "protocol": p, "containerPort": port}))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "none", "ports": ports}]},
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]},
    })
}

/// A Namespace object with `labels` (plus the name label the API server adds).
pub fn namespace_object(name: &str, labels: &[(&str, &str)]) -> Value {
    let mut l: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    l.insert("kubernetes.io/metadata.name".into(), json!(name));
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": l}})
}

/// Registers `ns` in `api`.
pub fn put_namespace(api: &FakeApi, name: &str, labels: &[(&str, &str)]) {
    api.put("namespaces", namespace_object(name, labels));
}
