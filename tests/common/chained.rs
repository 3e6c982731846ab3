//! Chained mode beside a simulated AWS VPC CNI, for tests/chained.rs and
//! bench/chained.rs: node namespaces and a "VPC host" on one underlay where pod
//! addresses are routed with no overlay (each host has a route to each node's pod
//! range via that node, as the VPC routes secondary addresses); pods plumbed by the
//! reference `ptp` and `host-local` plugins (Debian's containernetworking-plugins)
//! under the VPC CNI's network name, with /32 host routes on veths as the VPC CNI
//! installs them; a conflist run exactly as a runtime does (each plugin in order,
//! `prevResult` passed on); weftnet started with `--kubernetes --chained`.

use super::kube_api::FakeApi;
use super::kube_node::{
    conflist_plugin, fake_cluster, kube_args, pod_object, run_cni_plugin, KubeNode,
};
use super::mesh::wait_for;
use super::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const BOUND: Duration = Duration::from_secs(40);
/// The reference plugins, where Debian installs them.
pub const CNI_PLUGINS: &str = "/usr/lib/cni";
pub const PODS: &str = "172.31.0.0/16";

/// A node: its host namespace, daemon, CNI directories and pod range.
pub struct ChainedNode {
    pub name: String,
    pub d: Daemon,
    pub cni: PathBuf,
}

/// A pod: its namespace, address and host-side veth.
pub struct Pod {
    pub ns: Netns,
    pub id: String,
    pub ip: String,
    pub veth: String,
    pub result: Value,
}

/// `10-aws.conflist` of the simulated VPC CNI: `ptp` with `host-local` IPAM over the
/// node's slice of the VPC, under the VPC CNI's network name.
pub fn aws_conflist(range: &str, ipam_dir: &Path) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "aws-cni",
        "plugins": [{
            "type": "ptp",
            "ipMasq": false,
            "mtu": 1500,
            "ipam": {
                "type": "host-local",
                "ranges": [[{"subnet": range}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": ipam_dir.display().to_string(),
            }
        }]
    })
}

impl ChainedNode {
    /// Node `name` on `host` with pod range `range` (its `10-aws.conflist` under
    /// `dir/name/net.d`), running `weftnet up --kubernetes --chained` plus `extra`.
    pub fn start(
        host: &Host,
        name: &str,
        kubeconfig: &Path,
        secret: &Path,
        dir: &Path,
        range: &str,
        extra: &[&str],
    ) -> Self {
        let conf = [(
            "10-aws.conflist",
            aws_conflist(range, &dir.join(name).join("ipam")).to_string(),
        )];
        let KubeNode { name, d, cni } = KubeNode::start_custom(host, name, dir, &conf, |cni| {
            let mut args = kube_args(name, kubeconfig, secret, cni, None);
            args.push("--chained".into());
            args.extend(extra.iter().map(|a| a.to_string()));
            args
        });
        ChainedNode { name, d, cni }
    }
    pub fn ns(&self) -> &Netns {
        self.d.netns()
    }
    pub fn chained_conflist(&self) -> PathBuf {
        self.cni.join("net.d").join("05-weftnet-chained.conflist")
    }
    /// Waits (up to [`BOUND`]) until the daemon has written its chained conflist.
    pub fn wait_for_conflist(&self) {
        wait_for(&format!("{}: chained conflist", self.name), BOUND, || {
            self.chained_conflist()
                .exists()
                .then_some(())
                .ok_or("not written".into())
        });
    }
    /// Runs one plugin as the runtime does.
    pub fn plugin(
        &self,
        plugin: &str,
        command: &str,
        id: &str,
        pod: &Netns,
        config: &Value,
    ) -> (bool, Value) {
        let dir = if plugin == "weftnet" {
            self.cni.join("bin")
        } else {
            PathBuf::from(CNI_PLUGINS)
        };
        let cni_path = format!("{}:{CNI_PLUGINS}", self.cni.join("bin").display());
        run_cni_plugin(
            self.ns(),
            &dir.join(plugin),
            &cni_path,
            command,
            id,
            Some(pod),
            config,
        )
    }
    /// Runs the chained conflist for `command` (ADD in order, DEL in reverse, each
    /// plugin with the previous result), as libcni does; returns the final result.
    pub fn chain(&self, command: &str, id: &str, pod: &Netns, cached: Option<&Value>) -> Value {
        self.chain_of(&self.chained_conflist(), command, id, pod, cached)
    }
    /// [`ChainedNode::chain`] with the conflist at `path`.
    pub fn chain_of(
        &self,
        path: &Path,
        command: &str,
        id: &str,
        pod: &Netns,
        cached: Option<&Value>,
    ) -> Value {
        let text = std::fs::read_to_string(path).expect("conflist");
        let list: Value = serde_json::from_str(&text).expect("conflist JSON");
        let mut plugins = list["plugins"].as_array().expect("plugins").clone();
        if command == "DEL" {
            plugins.reverse();
        }
        let mut prev = cached.cloned();
        for p in plugins {
            let mut conf = conflist_plugin(&list, &p);
            if let Some(r) = &prev {
                conf["prevResult"] = r.clone();
            }
            let kind = p["type"].as_str().expect("type").to_string();
            let (ok, out) = self.plugin(&kind, command, id, pod, &conf);
            assert!(ok, "{}: {kind} {command} failed: {out}", self.name);
            if command == "ADD" {
                prev = Some(out);
            }
        }
        prev.unwrap_or(Value::Null)
    }
    /// A pod through the chained conflist, registered in the API server.
    pub fn add_pod(&self, api: &FakeApi, tag: &str) -> Pod {
        self.add_pod_via(&self.chained_conflist(), api, tag)
    }
    /// A pod through the conflist at `path` (the primary's alone: a pod weftnet
    /// never saw, on the plain VPC path).
    pub fn add_pod_via(&self, path: &Path, api: &FakeApi, tag: &str) -> Pod {
        let ns = Netns::new(tag);
        let id = format!("{}-{tag}", self.name);
        let result = self.chain_of(path, "ADD", &id, &ns, None);
        let ip = result["ips"][0]["address"].as_str().expect("address");
        let ip = ip.split('/').next().unwrap_or(ip).to_string();
        let veth = result["interfaces"]
            .as_array()
            .and_then(|is| is.iter().find(|i| i.get("sandbox").is_none()))
            .and_then(|i| i["name"].as_str())
            .expect("host veth")
            .to_string();
        api.put(
            "pods",
            pod_object("default", &id, &self.name, &ip, &[], &[]),
        );
        Pod {
            ns,
            id,
            ip,
            veth,
            result,
        }
    }
    /// Table 51820's routes; empty while it has none (then `ip` says it does not exist).
    pub fn table(&self) -> String {
        let out = self.ns().exec("ip", &["route", "show", "table", "51820"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
    pub fn rules(&self) -> String {
        self.ns().ip(&["rule", "show"])
    }
}

/// Pod ranges of [`start_beside_vpc`]'s nodes, slices of [`PODS`].
pub const RANGES: [&str; 2] = ["172.31.1.0/24", "172.31.2.0/24"];

/// Two chained nodes, `node1` on `h1` and `node2` on `h2` (pod ranges [`RANGES`]),
/// each running with `extra` flags, their files under `dir`. The VPC routes the pod
/// ranges to their nodes with no overlay ([`route_vpc`]); the API server runs on
/// `vpc`, off the nodes, so only weftnet talks between them. Returns at once: the
/// daemons may not have written their chained conflists yet.
pub fn start_beside_vpc(
    h1: &Host,
    h2: &Host,
    vpc: &Host,
    dir: &Path,
    extra: &[&str],
) -> (FakeApi, ChainedNode, ChainedNode) {
    route_vpc(&[h1, h2], vpc, &RANGES);
    let k = fake_cluster(vpc, &[("node1", h1, None), ("node2", h2, None)], dir);
    let (kubeconfig, secret) = (&k.kubeconfig, &k.secret);
    let n1 = ChainedNode::start(h1, "node1", kubeconfig, secret, dir, RANGES[0], extra);
    let n2 = ChainedNode::start(h2, "node2", kubeconfig, secret, dir, RANGES[1], extra);
    (k.api, n1, n2)
}

/// The VPC: pod ranges routed to their nodes (`ranges[i]` via node `i`) on the nodes
/// (forwarding on) and on the VPC host, with no overlay.
pub fn route_vpc(nodes: &[&Host], vpc: &Host, ranges: &[&str]) {
    for (i, h) in nodes.iter().enumerate() {
        h.sysctl(&[("net.ipv4.ip_forward", "1")]);
        for (j, other) in nodes.iter().enumerate() {
            if i != j {
                let via = other.underlay_v4().to_string();
                h.ip(&["route", "add", ranges[j], "via", &via]);
            }
        }
    }
    for (i, r) in ranges.iter().enumerate() {
        vpc.ip(&[
            "route",
            "add",
            r,
            "via",
            &nodes[i].underlay_v4().to_string(),
        ]);
    }
}

/// Pings `to` from the pod `count` times, 0.2 s apart; true if any answer came.
pub fn pings(from: &Pod, to: &str, count: u32) -> bool {
    let c = count.to_string();
    from.ns
        .exec("ping", &["-c", &c, "-i", "0.2", "-W", "1", "-q", to])
        .status
        .success()
}
