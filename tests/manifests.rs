//! The deployment files in `deploy/` are valid and consistent with the binary: every document
//! of the Kubernetes manifest is a well-formed Kubernetes object (no unknown or misspelled
//! fields), the RBAC is least privilege, the DaemonSet runs on every node with only the
//! capabilities it needs, every flag it passes exists in `weftnet up`, every path it names is
//! mounted, rolling updates go one node at a time without surge, the cleanup DaemonSet
//! (`weftnet-cleanup.yaml`) uninstalls with the DaemonSet's settings and mounts, and the
//! Dockerfile copies files that exist and installs the static binary the manifest runs.

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Container, PodSpec, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

const MAIN: &str = "deploy/kubernetes/weftnet.yaml";
/// Chained mode beside the AWS VPC CNI: the same checks apply.
const VPC_CNI: &str = "deploy/kubernetes/weftnet-vpc-cni.yaml";

fn manifest_text_of(file: &str) -> String {
    read(file)
}

/// Every non-empty YAML document of the manifest, as JSON.
fn documents_of(file: &str) -> Vec<Value> {
    let text = manifest_text_of(file);
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("manifest document is valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

fn doc(kind: &str) -> Value {
    doc_of(MAIN, kind)
}

fn doc_of(file: &str, kind: &str) -> Value {
    let docs: Vec<Value> = documents_of(file)
        .into_iter()
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(docs.len(), 1, "expected exactly one {kind} in the manifest");
    docs.into_iter().next().expect("one document")
}

/// Deserialize into the k8s-openapi type and check that nothing was lost on the way back: a
/// misspelled or misplaced field would be dropped by the typed round trip.
fn typed<T: DeserializeOwned + Serialize>(v: &Value) -> T {
    let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| {
        panic!(
            "{} is not a valid {}: {e}",
            v["metadata"]["name"], v["kind"]
        )
    });
    let back = serde_json::to_value(&t).expect("serializes");
    assert_eq!(
        &back, v,
        "{} {} has unknown or malformed fields",
        v["kind"], v["metadata"]["name"]
    );
    t
}

fn daemonset() -> DaemonSet {
    daemonset_of(MAIN)
}

fn daemonset_of(file: &str) -> DaemonSet {
    typed(&doc_of(file, "DaemonSet"))
}

fn pod_spec(ds: &DaemonSet) -> PodSpec {
    ds.spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("DaemonSet has a pod spec")
}

fn container(ds: &DaemonSet) -> Container {
    let spec = pod_spec(ds);
    assert_eq!(spec.containers.len(), 1, "one container");
    spec.containers[0].clone()
}

fn args(c: &Container) -> Vec<String> {
    c.args.clone().expect("container args")
}

/// The value of `--name=value` in `args`.
fn flag_value<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .find_map(|a| a.strip_prefix(name)?.strip_prefix('='))
}

/// `weftnet <sub> --help`.
fn help(sub: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_weftnet"))
        .args([sub, "--help"])
        .output()
        .expect("weftnet runs");
    assert!(out.status.success(), "weftnet {sub} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `help` lists `flag` (`--name`) as a whole word.
fn has_flag(help: &str, flag: &str) -> bool {
    help.match_indices(flag).any(|(i, _)| {
        let next = help[i + flag.len()..].chars().next();
        let prev = help[..i].chars().next_back();
        !matches!(next, Some(c) if c.is_ascii_alphanumeric() || c == '-')
            && !matches!(prev, Some(c) if c.is_ascii_alphanumeric() || c == '-')
    })
}

fn every_document_is_a_valid_kubernetes_object_in(file: &str) {
    let kinds: Vec<String> = documents_of(file)
        .iter()
        .map(|d| d["kind"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        kinds,
        [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet"
        ]
    );
    let sa: ServiceAccount = typed(&doc_of(file, "ServiceAccount"));
    let ds = daemonset_of(file);
    for (what, meta) in [
        ("ServiceAccount", &sa.metadata),
        ("DaemonSet", &ds.metadata),
    ] {
        assert_eq!(meta.name.as_deref(), Some("weftnet"), "{what} name");
        assert_eq!(
            meta.namespace.as_deref(),
            Some("kube-system"),
            "{what} namespace"
        );
    }
    let _: ClusterRole = typed(&doc_of(file, "ClusterRole"));
    let _: ClusterRoleBinding = typed(&doc_of(file, "ClusterRoleBinding"));
}

#[test]
fn every_document_is_a_valid_kubernetes_object() {
    every_document_is_a_valid_kubernetes_object_in(MAIN);
}

#[test]
fn every_document_is_a_valid_kubernetes_object_vpc_cni() {
    every_document_is_a_valid_kubernetes_object_in(VPC_CNI);
}

/// Every grant of `role` as `apiGroup/resource:verb` (the core group is empty, so
/// `/pods:get`); panics on a rule without apiGroups or resources.
fn grants_of(role: &ClusterRole) -> BTreeSet<String> {
    let mut grants = BTreeSet::new();
    for rule in role.rules.as_deref().expect("rules") {
        for group in rule.api_groups.as_deref().expect("apiGroups") {
            for res in rule.resources.as_deref().expect("resources") {
                for verb in &rule.verbs {
                    grants.insert(format!("{group}/{res}:{verb}"));
                }
            }
        }
    }
    grants
}

#[test]
fn cluster_role_is_least_privilege_and_bound_to_the_daemonset() {
    let role: ClusterRole = typed(&doc("ClusterRole"));
    for rule in role.rules.as_deref().expect("rules") {
        assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
    }
    let grants = grants_of(&role);
    let want: BTreeSet<String> = [
        "/nodes:get",
        "/nodes:list",
        "/nodes:watch",
        // Annotations and conditions both go through the status subresource: no
        // `patch` on `nodes`, which would let a pod taint or relabel any Node.
        "/nodes/status:patch",
        // NetworkPolicy enforcement reads, never writes.
        "/pods:get",
        "/pods:list",
        "/pods:watch",
        "/namespaces:get",
        "/namespaces:list",
        "/namespaces:watch",
        "networking.k8s.io/networkpolicies:get",
        "networking.k8s.io/networkpolicies:list",
        "networking.k8s.io/networkpolicies:watch",
    ]
    .map(String::from)
    .into();
    assert_eq!(grants, want);

    let binding: ClusterRoleBinding = typed(&doc("ClusterRoleBinding"));
    assert_eq!(binding.role_ref.kind, "ClusterRole");
    assert_eq!(
        binding.role_ref.name,
        role.metadata.name.expect("role name")
    );
    let subjects = binding.subjects.expect("subjects");
    assert_eq!(subjects.len(), 1);
    assert_eq!(
        (
            subjects[0].kind.as_str(),
            subjects[0].name.as_str(),
            subjects[0].namespace.as_deref()
        ),
        ("ServiceAccount", "weftnet", Some("kube-system"))
    );
    let spec = pod_spec(&daemonset());
    assert_eq!(spec.service_account_name.as_deref(), Some("weftnet"));
}

fn daemonset_runs_on_every_node_with_only_network_capabilities_in(file: &str) {
    let ds = daemonset_of(file);
    let spec = pod_spec(&ds);
    assert_eq!(spec.host_network, Some(true));
    assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
    assert_eq!(
        spec.priority_class_name.as_deref(),
        Some("system-node-critical")
    );
    assert_eq!(spec.termination_grace_period_seconds, Some(10));
    let tolerations = spec.tolerations.clone().expect("tolerations");
    assert!(
        tolerations
            .iter()
            .any(|t| t.operator.as_deref() == Some("Exists")
                && t.key.is_none()
                && t.effect.is_none()),
        "must tolerate every taint: {tolerations:?}"
    );
    let update = ds
        .spec
        .as_ref()
        .and_then(|s| s.update_strategy.clone())
        .expect("updateStrategy");
    assert_eq!(update.type_.as_deref(), Some("RollingUpdate"));

    let c = container(&ds);
    let sc = c.security_context.clone().expect("securityContext");
    assert_eq!(sc.privileged, Some(false));
    let caps = sc
        .capabilities
        .and_then(|c| c.add)
        .expect("capabilities.add");
    assert_eq!(caps, ["NET_ADMIN", "NET_RAW"]);
    assert_eq!(
        c.image.as_deref(),
        Some(concat!(
            "ghcr.io/weftnet/weftnet:",
            env!("CARGO_PKG_VERSION")
        )),
        "the image tag follows the crate version"
    );
    let env = c.env.clone().expect("env");
    let node_name = env
        .iter()
        .find(|e| e.name == "NODE_NAME")
        .expect("NODE_NAME env");
    let field = node_name
        .value_from
        .as_ref()
        .and_then(|v| v.field_ref.as_ref());
    assert_eq!(field.map(|f| f.field_path.as_str()), Some("spec.nodeName"));
    assert!(args(&c).contains(&"--node-name=$(NODE_NAME)".to_owned()));
    let requests = c
        .resources
        .as_ref()
        .and_then(|r| r.requests.clone())
        .expect("requests");
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
}

/// Chained mode reads Nodes (seeds, the authority) and Pods (which addresses each
/// node may announce) and writes nothing.
#[test]
fn vpc_cni_cluster_role_only_reads_nodes_and_pods() {
    let role: ClusterRole = typed(&doc_of(VPC_CNI, "ClusterRole"));
    let grants = grants_of(&role);
    let want: BTreeSet<String> = [
        "/nodes:get",
        "/nodes:list",
        "/nodes:watch",
        "/pods:get",
        "/pods:list",
        "/pods:watch",
    ]
    .map(String::from)
    .into();
    assert_eq!(grants, want);
    let args = args(&container(&daemonset_of(VPC_CNI)));
    for flag in ["--kubernetes", "--chained"] {
        assert!(args.contains(&flag.to_string()), "{flag} in args");
    }
    assert!(
        flag_value(&args, "--range").is_none(),
        "chained mode keeps the VPC's addresses"
    );
}

#[test]
fn daemonset_runs_on_every_node_with_only_network_capabilities() {
    daemonset_runs_on_every_node_with_only_network_capabilities_in(MAIN);
}

#[test]
fn daemonset_runs_on_every_node_with_only_network_capabilities_vpc_cni() {
    daemonset_runs_on_every_node_with_only_network_capabilities_in(VPC_CNI);
}

fn probes_use_the_health_endpoint_in(file: &str) {
    let c = container(&daemonset_of(file));
    let args = args(&c);
    let listen = flag_value(&args, "--health-listen").expect("--health-listen in args");
    let (host, port) = listen
        .rsplit_once(':')
        .expect("--health-listen is ADDR:PORT");
    // Host network: any address but loopback would let every pod reach the endpoint.
    assert_eq!(host, "127.0.0.1", "--health-listen on loopback only");
    let port: i32 = port.parse().expect("--health-listen port");
    assert!(
        c.ports.is_none(),
        "no container port for a loopback endpoint"
    );
    for (probe, path) in [
        (&c.readiness_probe, "/readyz"),
        (&c.liveness_probe, "/healthz"),
    ] {
        let get = probe
            .as_ref()
            .and_then(|p| p.http_get.clone())
            .expect("httpGet probe");
        assert_eq!(get.path.as_deref(), Some(path));
        assert_eq!(get.host.as_deref(), Some(host), "{path} probe host");
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port),
            "{path} probe port"
        );
    }
    let liveness = c.liveness_probe.expect("liveness");
    assert!(
        liveness.initial_delay_seconds.unwrap_or(0) > 0,
        "liveness needs an initial delay"
    );
}

#[test]
fn probes_use_the_health_endpoint() {
    probes_use_the_health_endpoint_in(MAIN);
}

#[test]
fn probes_use_the_health_endpoint_vpc_cni() {
    probes_use_the_health_endpoint_in(VPC_CNI);
}

fn every_container_flag_exists_in_weftnet_up_in(file: &str) {
    let c = container(&daemonset_of(file));
    assert_eq!(
        c.command.as_deref(),
        Some(&["/usr/local/bin/weftnet".to_owned()][..])
    );
    let args = args(&c);
    assert_eq!(args[0], "up");
    let text = help("up");
    let missing: Vec<&str> = args[1..]
        .iter()
        .map(|a| a.split('=').next().unwrap_or(a))
        .filter(|flag| !flag.starts_with("--") || !has_flag(&text, flag))
        .collect();
    assert!(
        missing.is_empty(),
        "`weftnet up` has no flag(s) {missing:?}\n{text}"
    );
}

#[test]
fn every_container_flag_exists_in_weftnet_up() {
    every_container_flag_exists_in_weftnet_up_in(MAIN);
}

#[test]
fn every_container_flag_exists_in_weftnet_up_vpc_cni() {
    every_container_flag_exists_in_weftnet_up_in(VPC_CNI);
}

fn every_path_flag_is_mounted_in(file: &str) {
    let ds = daemonset_of(file);
    let spec = pod_spec(&ds);
    let c = container(&ds);
    let mounts = c.volume_mounts.clone().expect("volumeMounts");
    let volumes = spec.volumes.clone().expect("volumes");
    let volume = |name: &str| volumes.iter().find(|v| v.name == name).cloned();
    for m in &mounts {
        assert!(volume(&m.name).is_some(), "mount {} has no volume", m.name);
    }
    let mount_of = |path: &str| {
        mounts
            .iter()
            .filter(|m| path == m.mount_path || path.starts_with(&format!("{}/", m.mount_path)))
            .max_by_key(|m| m.mount_path.len())
            .cloned()
            .unwrap_or_else(|| panic!("{path} is not under any volumeMount"))
    };
    let args = args(&c);
    for arg in &args {
        if let Some((_, value)) = arg.split_once('=').filter(|(_, v)| v.starts_with('/')) {
            mount_of(value);
        }
    }
    // The secret file comes from the Secret the header comment tells the operator to create.
    let secret_file = flag_value(&args, "--secret-file").expect("--secret-file");
    let m = mount_of(secret_file);
    assert_eq!(m.read_only, Some(true));
    let secret = volume(&m.name)
        .and_then(|v| v.secret)
        .expect("secret volume");
    let name = secret.secret_name.expect("secretName");
    // weftnet refuses a secret file that group or others can read (the default 0644).
    let mode = secret
        .default_mode
        .expect("defaultMode on the secret volume");
    assert_eq!(
        mode & 0o077,
        0,
        "secret volume defaultMode {mode:o} is readable by others"
    );
    // Mounted with subPath, so the daemon sees the file itself: a Secret volume shows
    // each key as a symbolic link, which weftnet refuses.
    assert_eq!(
        m.mount_path, secret_file,
        "the secret file is a subPath mount"
    );
    let sub = m.sub_path.clone().expect("subPath");
    let items = secret.items.expect("secret items");
    assert!(
        items.iter().any(|i| i.path == sub && i.key == "secret"),
        "{items:?}"
    );
    let create = format!("create secret generic {name} --from-file=secret=");
    assert!(
        manifest_text_of(file).contains(&create),
        "header comment must say `{create}...`"
    );
    // The CNI plugin runs on the host, so its data and the daemon's state (control socket)
    // sit at the same path inside and outside; the CNI dirs are the host's standard ones.
    for (flag, host) in [
        ("--state-dir", flag_value(&args, "--state-dir")),
        ("--cni-data-dir", flag_value(&args, "--cni-data-dir")),
        ("--cni-bin-dir", Some("/opt/cni/bin")),
        ("--cni-conf-dir", Some("/etc/cni/net.d")),
    ] {
        let dir = flag_value(&args, flag).unwrap_or_else(|| panic!("{flag} in args"));
        let m = mount_of(dir);
        assert_eq!(m.mount_path, dir, "{flag} is a mount of its own");
        let hp = volume(&m.name)
            .and_then(|v| v.host_path)
            .expect("hostPath volume");
        assert_eq!(Some(hp.path.as_str()), host, "{flag} host path");
    }
    let tun = mount_of("/dev/net/tun");
    let hp = volume(&tun.name)
        .and_then(|v| v.host_path)
        .expect("tun hostPath");
    assert_eq!(
        (hp.path.as_str(), hp.type_.as_deref()),
        ("/dev/net/tun", Some("CharDevice"))
    );
}

#[test]
fn every_path_flag_is_mounted() {
    every_path_flag_is_mounted_in(MAIN);
}

#[test]
fn every_path_flag_is_mounted_vpc_cni() {
    every_path_flag_is_mounted_in(VPC_CNI);
}

/// `COPY [--flags] SRC... DEST` lines of the Dockerfile: (flags, sources, destination).
fn dockerfile_copies(text: &str) -> Vec<(Vec<String>, Vec<String>, String)> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("COPY "))
        .map(|rest| {
            let words: Vec<String> = rest.split_whitespace().map(String::from).collect();
            let (flags, mut paths): (Vec<String>, Vec<String>) =
                words.into_iter().partition(|w| w.starts_with("--"));
            let dest = paths.pop().expect("COPY has a destination");
            (flags, paths, dest)
        })
        .collect()
}

#[test]
fn dockerfile_builds_the_binary_the_manifest_runs() {
    let text = read("deploy/Dockerfile");
    let copies = dockerfile_copies(&text);
    let mut copied = BTreeSet::new();
    for (_, sources, _) in copies.iter().filter(|(f, _, _)| f.is_empty()) {
        for src in sources {
            assert!(
                Path::new(ROOT).join(src).exists(),
                "Dockerfile copies {src}, which does not exist"
            );
            copied.insert(src.trim_end_matches('/').to_owned());
        }
    }
    // Everything the workspace needs to build is copied.
    let cargo: toml::Value = toml::from_str(&read("Cargo.toml")).expect("Cargo.toml");
    let members = cargo["workspace"]["members"]
        .as_array()
        .expect("workspace members");
    for m in members
        .iter()
        .filter_map(|m| m.as_str())
        .filter(|m| *m != ".")
    {
        assert!(copied.contains(m), "workspace member {m} is not copied");
    }
    for f in ["Cargo.toml", "Cargo.lock", "src"] {
        assert!(copied.contains(f), "{f} is not copied");
    }
    let ignore = read(".dockerignore");
    for path in ["target/", "fuzz/target/", "fuzz/artifacts/"] {
        assert!(
            ignore.lines().any(|l| l.trim() == path),
            ".dockerignore lacks {path}"
        );
    }
    // The static build (runs on any x86_64 host, whatever its glibc).
    assert!(text.contains("scripts/build-static"));
    let script = read("scripts/build-static");
    assert!(script.contains("cargo build --release --locked --target \"$target\""));
    assert!(script.contains("target=x86_64-unknown-linux-musl"));

    let command = container(&daemonset()).command.expect("command")[0].clone();
    let (_, sources, dest) = copies
        .iter()
        .find(|(f, _, _)| f.iter().any(|f| f.starts_with("--from=")))
        .expect("COPY --from=builder of the binary");
    assert_eq!(
        dest, &command,
        "the image installs the binary the DaemonSet runs"
    );
    assert!(
        sources
            .iter()
            .all(|s| s.ends_with("/target/x86_64-unknown-linux-musl/release/weftnet")),
        "{sources:?}"
    );
    assert!(text.contains(&format!("ENTRYPOINT [\"{command}\"]")));
    let image = container(&daemonset()).image.expect("image");
    assert!(
        text.contains(&format!("-t {image} .")),
        "the build comment names {image}"
    );
}

/// The DaemonSet of `deploy/kubernetes/weftnet-cleanup.yaml`.
fn cleanup_daemonset() -> DaemonSet {
    let text = read("deploy/kubernetes/weftnet-cleanup.yaml");
    let docs: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).expect("cleanup manifest is valid YAML"))
        .filter(|v| !v.is_null())
        .collect();
    assert_eq!(docs.len(), 1, "one DaemonSet");
    assert_eq!(docs[0]["kind"], "DaemonSet");
    typed(&docs[0])
}

fn rolling_updates_go_one_node_at_a_time_without_surge_in(file: &str) {
    let ds = daemonset_of(file);
    let spec = ds.spec.as_ref().expect("spec");
    assert!(
        spec.min_ready_seconds.unwrap_or(0) >= 5,
        "the next node only after this one has been ready a while"
    );
    let rolling = spec
        .update_strategy
        .as_ref()
        .and_then(|u| u.rolling_update.clone())
        .expect("rollingUpdate");
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    assert_eq!(rolling.max_unavailable, Some(IntOrString::Int(1)));
    // A surge pod would race the old one for weft0 and the UDP port.
    assert_eq!(rolling.max_surge, Some(IntOrString::Int(0)));
}

#[test]
fn rolling_updates_go_one_node_at_a_time_without_surge() {
    rolling_updates_go_one_node_at_a_time_without_surge_in(MAIN);
}

#[test]
fn rolling_updates_go_one_node_at_a_time_without_surge_vpc_cni() {
    rolling_updates_go_one_node_at_a_time_without_surge_in(VPC_CNI);
}

#[test]
fn the_cleanup_daemonset_uninstalls_what_the_daemonset_installed() {
    let ds = cleanup_daemonset();
    let spec = pod_spec(&ds);
    assert_eq!(spec.host_network, Some(true), "acts on the node's network");
    let init = spec.init_containers.clone().expect("initContainers");
    assert_eq!(init.len(), 1);
    let c = &init[0];
    assert_eq!(
        c.command.as_deref(),
        Some(&["/usr/local/bin/weftnet".to_owned()][..])
    );
    let cleanup_args = args(c);
    assert_eq!(cleanup_args[0], "uninstall");
    let text = help("uninstall");
    let missing: Vec<&str> = cleanup_args[1..]
        .iter()
        .map(|a| a.split('=').next().unwrap_or(a))
        .filter(|flag| !flag.starts_with("--") || !has_flag(&text, flag))
        .collect();
    assert!(
        missing.is_empty(),
        "`weftnet uninstall` has no flag(s) {missing:?}"
    );
    assert_eq!(
        c.image,
        container(&daemonset()).image,
        "the same image as the DaemonSet"
    );
    // The settings the DaemonSet ran with, and the same mounts for each path.
    let main = container(&daemonset());
    let main_args = args(&main);
    for flag in [
        "--range",
        "--state-dir",
        "--cni-bin-dir",
        "--cni-conf-dir",
        "--cni-data-dir",
    ] {
        assert_eq!(
            flag_value(&cleanup_args, flag),
            flag_value(&main_args, flag),
            "{flag} as in weftnet.yaml"
        );
    }
    assert_eq!(flag_value(&cleanup_args, "--bridge"), Some("weftbr0"));
    let sc = c.security_context.clone().expect("securityContext");
    let caps = sc.capabilities.and_then(|c| c.add).expect("capabilities");
    assert!(caps.contains(&"NET_ADMIN".to_owned()));
    let mounts = c.volume_mounts.clone().expect("volumeMounts");
    let main_mounts = main.volume_mounts.clone().expect("volumeMounts");
    let volumes = spec.volumes.clone().expect("volumes");
    let main_volumes = pod_spec(&daemonset()).volumes.expect("volumes");
    for m in &mounts {
        let same = main_mounts
            .iter()
            .find(|o| o.mount_path == m.mount_path)
            .unwrap_or_else(|| panic!("{} is not mounted by weftnet.yaml", m.mount_path));
        let host = |vs: &[k8s_openapi::api::core::v1::Volume], name: &str| {
            vs.iter()
                .find(|v| v.name == name)
                .and_then(|v| v.host_path.clone())
                .map(|h| h.path)
        };
        assert_eq!(
            host(&volumes, &m.name),
            host(&main_volumes, &same.name),
            "{} is the same host path",
            m.mount_path
        );
    }
}
