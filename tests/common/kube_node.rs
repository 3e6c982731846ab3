//! One Kubernetes node for end-to-end tests: `weftnet up --kubernetes` in a host
//! namespace against the fake API server, with its CNI directories, and pods wired by
//! calling the installed CNI plugin exactly as a container runtime does (and
//! registered as Pod objects in the fake API server when asked).

use super::kube_api::FakeApi;
use super::{run_bounded, Daemon, Host, Netns, EXEC_TIMEOUT};
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
        let cni = dir.join(name);
        std::fs::create_dir_all(cni.join("net.d")).expect("net.d");
        let mut args = kube_args(name, kubeconfig, secret, &cni, Some(range));
        args.extend(extra.iter().cloned());
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
    /// The plugin's network config as a runtime passes it.
    pub fn net_config(&self) -> Value {
        let path = self.cni.join("net.d").join("00-weftnet.conflist");
        let text = std::fs::read_to_string(&path).expect("conflist");
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
        let bin = self.cni.join("bin");
        let cni_path = bin.display().to_string();
        run_cni_plugin(
            self.ns(),
            &bin.join("weftnet"),
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
