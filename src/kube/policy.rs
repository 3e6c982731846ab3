//! What the policy engine reads from the API objects: NetworkPolicies, Pods and
//! Namespaces converted into `weftnet_proto::policy` terms. The API server validates
//! these objects; whatever still does not parse (an unknown operator or protocol, a
//! bad CIDR) fails closed: that selector or peer matches nothing, that port entry no
//! port, and a warning names the policy.

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Namespace as KNamespace, Pod as KPod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::IpAddr;
use weftnet_proto::policy::{
    IpBlock, NamedPort, Namespace, Operator, Peer, Pod, PodKey, Policy, PolicyPort, PortRef,
    Protocol, Requirement, Rule, Selector,
};

/// A selector that matches nothing (for what does not parse).
fn nothing() -> Selector {
    Selector {
        match_labels: Default::default(),
        match_expressions: vec![Requirement {
            key: String::new(),
            operator: Operator::In,
            values: Vec::new(),
        }],
    }
}

fn selector(s: &LabelSelector, warn: &mut Vec<String>) -> Selector {
    let mut out = Selector {
        match_labels: s.match_labels.clone().unwrap_or_default(),
        match_expressions: Vec::new(),
    };
    for e in s.match_expressions.iter().flatten() {
        let Some(operator) = Operator::parse(&e.operator) else {
            warn.push(format!("unknown selector operator {:?}", e.operator));
            return nothing();
        };
        out.match_expressions.push(Requirement {
            key: e.key.clone(),
            operator,
            values: e.values.clone().unwrap_or_default(),
        });
    }
    out
}

fn peer(p: &NetworkPolicyPeer, warn: &mut Vec<String>) -> Peer {
    if let Some(b) = &p.ip_block {
        let cidr = b.cidr.parse::<IpNet>().map(|n| n.trunc());
        let except: Result<Vec<IpNet>, _> = b
            .except
            .iter()
            .flatten()
            .map(|e| e.parse::<IpNet>().map(|n| n.trunc()))
            .collect();
        return match (cidr, except) {
            (Ok(cidr), Ok(except)) => Peer::Block(IpBlock { cidr, except }),
            _ => {
                warn.push(format!("bad ipBlock {:?}", b.cidr));
                Peer::Pods {
                    namespaces: Some(nothing()),
                    pods: None,
                }
            }
        };
    }
    Peer::Pods {
        namespaces: p.namespace_selector.as_ref().map(|s| selector(s, warn)),
        pods: p.pod_selector.as_ref().map(|s| selector(s, warn)),
    }
}

fn port(p: &NetworkPolicyPort, warn: &mut Vec<String>) -> Option<PolicyPort> {
    let name = p.protocol.as_deref().unwrap_or("TCP");
    let Some(protocol) = Protocol::parse(name) else {
        warn.push(format!("unknown protocol {name:?}"));
        return None;
    };
    let port = match &p.port {
        None => None,
        Some(IntOrString::Int(n)) => match u16::try_from(*n) {
            Ok(n) if n > 0 => Some(PortRef::Number(n)),
            _ => {
                warn.push(format!("bad port {n}"));
                return None;
            }
        },
        Some(IntOrString::String(s)) => Some(PortRef::Name(s.clone())),
    };
    let end_port = match (&port, p.end_port) {
        (Some(PortRef::Number(_)), Some(e)) => u16::try_from(e).ok(),
        _ => None,
    };
    Some(PolicyPort {
        protocol,
        port,
        end_port,
    })
}

fn rule(
    peers: Option<&Vec<NetworkPolicyPeer>>,
    ports: Option<&Vec<NetworkPolicyPort>>,
    warn: &mut Vec<String>,
) -> Rule {
    let ports_given = ports.is_some_and(|p| !p.is_empty());
    let ports: Vec<PolicyPort> = ports
        .iter()
        .flat_map(|v| v.iter())
        .filter_map(|p| port(p, warn))
        .collect();
    if ports_given && ports.is_empty() {
        // Every port entry failed to parse: the rule must not widen to every port.
        return Rule {
            peers: vec![Peer::Pods {
                namespaces: Some(nothing()),
                pods: None,
            }],
            ports: Vec::new(),
        };
    }
    Rule {
        peers: peers
            .iter()
            .flat_map(|v| v.iter())
            .map(|p| peer(p, warn))
            .collect(),
        ports,
    }
}

/// A NetworkPolicy as the engine reads it, with warnings about what did not parse.
pub(crate) fn policy_of(np: &NetworkPolicy) -> (Policy, Vec<String>) {
    let mut warn = Vec::new();
    let key = PodKey::new(
        np.metadata.namespace.as_deref().unwrap_or("default"),
        np.metadata.name.as_deref().unwrap_or_default(),
    );
    let spec = np.spec.clone().unwrap_or_default();
    let pod_selector = spec
        .pod_selector
        .as_ref()
        .map_or_else(Selector::all, |s| selector(s, &mut warn));
    let policy_types = spec.policy_types.as_ref().map(|t| {
        (
            t.iter().any(|x| x == "Ingress"),
            t.iter().any(|x| x == "Egress"),
        )
    });
    let ingress = spec
        .ingress
        .iter()
        .flatten()
        .map(|r| rule(r.from.as_ref(), r.ports.as_ref(), &mut warn))
        .collect();
    let egress = spec
        .egress
        .iter()
        .flatten()
        .map(|r| rule(r.to.as_ref(), r.ports.as_ref(), &mut warn))
        .collect();
    (
        Policy {
            key,
            pod_selector,
            policy_types,
            ingress,
            egress,
        },
        warn,
    )
}

/// A Pod as the engine reads it; `None` for pods that finished (their addresses may
/// belong to a new pod already).
pub(crate) fn pod_of(p: &KPod) -> Option<Pod> {
    let status = p.status.as_ref();
    if matches!(
        status.and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) {
        return None;
    }
    let spec = p.spec.as_ref();
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(
            status
                .and_then(|s| s.pod_ip.as_deref())
                .and_then(|i| i.parse::<IpAddr>().ok()),
        );
    }
    let ports = spec
        .into_iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|cp| {
            Some(NamedPort {
                name: cp.name.clone()?,
                protocol: Protocol::parse(cp.protocol.as_deref().unwrap_or("TCP"))?,
                port: u16::try_from(cp.container_port).ok()?,
            })
        })
        .collect();
    Some(Pod {
        key: PodKey::new(
            p.metadata.namespace.as_deref().unwrap_or("default"),
            p.metadata.name.as_deref().unwrap_or_default(),
        ),
        labels: p.metadata.labels.clone().unwrap_or_default(),
        ips,
        node: spec.and_then(|s| s.node_name.clone()),
        ports,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
    })
}

/// A Namespace's labels.
pub(crate) fn namespace_of(n: &KNamespace) -> Namespace {
    Namespace {
        name: n.metadata.name.clone().unwrap_or_default(),
        labels: n.metadata.labels.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weftnet_proto::policy::{compile, Cluster, Direction};

    #[test]
    fn a_policy_from_json_means_what_upstream_says() {
        let np: NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "x", "name": "web"},
            "spec": {
                "podSelector": {"matchLabels": {"app": "web"}},
                "ingress": [{
                    "from": [
                        {"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
                         "podSelector": {"matchLabels": {"role": "client"}}},
                        {"ipBlock": {"cidr": "192.0.2.0/24", "except": ["192.0.2.128/25"]}}
                    ],
                    "ports": [{"port": "http"}, {"protocol": "UDP", "port": 5000, "endPort": 5010}]
                }],
                "egress": [{"ports": [{"protocol": "BOGUS"}]}]
            }
        }))
        .expect("policy JSON");
        let (p, warn) = policy_of(&np);
        assert_eq!(p.types(), (true, true));
        assert_eq!(warn, ["unknown protocol \"BOGUS\""]);
        let pod: KPod = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "x", "name": "w", "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
            "status": {"podIPs": [{"ip": "10.244.1.5"}]}
        }))
        .expect("pod JSON");
        let pod = pod_of(&pod).expect("running pod");
        assert_eq!(pod.ports[0].port, 8080);
        let mut c = Cluster::default();
        c.pods.insert(pod.key.clone(), pod);
        c.policies.insert(p.key.clone(), p);
        let rules = compile(&c, |_| true);
        let r = &rules[0];
        let ext: IpAddr = "192.0.2.7".parse().expect("ip");
        let tcp = weftnet_proto::policy::Protocol::Tcp;
        let udp = weftnet_proto::policy::Protocol::Udp;
        assert!(r.allows(Direction::Ingress, ext, Some((tcp, 8080))));
        assert!(!r.allows(Direction::Ingress, ext, Some((tcp, 80))));
        assert!(r.allows(Direction::Ingress, ext, Some((udp, 5010))));
        assert!(!r.allows(
            Direction::Ingress,
            "192.0.2.200".parse().expect("ip"),
            Some((tcp, 8080))
        ));
        // The egress rule's only port did not parse: it allows nothing, not everything.
        assert!(!r.allows(Direction::Egress, ext, Some((tcp, 1))));
    }

    #[test]
    fn finished_pods_are_left_out() {
        let pod: KPod = serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "x", "name": "done"},
            "status": {"phase": "Succeeded", "podIP": "10.244.1.5"}
        }))
        .expect("pod JSON");
        assert!(pod_of(&pod).is_none());
    }
}
