//! The Kubernetes manifests in `examples/kubernetes/` parse, hang together, carry a valid
//! pipeline, and grant exactly the API calls the `kubernetes_events` source makes.

use std::collections::BTreeSet;
use std::path::Path;

use kollate::sources::kubernetes_events::{
    ENRICH_PERMISSIONS, LEADER_ELECTION_PERMISSIONS, REQUIRED_PERMISSIONS,
};
use serde::Deserialize;
use serde_yaml::Value;

fn documents() -> Vec<Value> {
    documents_in("examples/kubernetes")
}

fn documents_in(dir: &str) -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut docs = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    names.sort();
    for path in names
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    {
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(
                value.get("kind").is_some(),
                "{}: a document without kind",
                path.display()
            );
            docs.push(value);
        }
    }
    docs
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

type Grant = (String, String, String, Option<String>);

/// Every (API group, resource, verb, resource name) a role's rules allow.
fn grants(role: &Value) -> BTreeSet<Grant> {
    let mut granted = BTreeSet::new();
    let strings = |v: &Value| -> Vec<String> {
        v.as_sequence()
            .map(|s| s.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    };
    for rule in role["rules"].as_sequence().unwrap() {
        let names: Vec<Option<String>> = match strings(&rule["resourceNames"]) {
            n if n.is_empty() => vec![None],
            n => n.into_iter().map(Some).collect(),
        };
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    for name in &names {
                        granted.insert((
                            group.clone(),
                            resource.clone(),
                            verb.clone(),
                            name.clone(),
                        ));
                    }
                }
            }
        }
    }
    granted
}

fn needed(permissions: &[(&str, &str, &str)], name: Option<&str>) -> BTreeSet<Grant> {
    permissions
        .iter()
        .map(|(g, r, v)| {
            // A name cannot restrict `create`: the object does not exist yet.
            let name = name.filter(|_| *v != "create").map(str::to_owned);
            (g.to_string(), r.to_string(), v.to_string(), name)
        })
        .collect()
}

fn pipeline(config_map: &Value, origin: &str) -> kollate::config::Config {
    let text = config_map["data"]["kollate.toml"].as_str().unwrap();
    kollate::config::Config::from_str_with(text, Path::new(origin), &|name| {
        (name == "POD_NAMESPACE").then(|| "shop".to_owned())
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn rbac_grants_exactly_what_the_source_calls() {
    let docs = documents();
    let text = of_kind(&docs, "ConfigMap")[0]["data"]["kollate.toml"]
        .as_str()
        .unwrap();
    let config: toml::Value = toml::from_str(text).unwrap();
    let source = &config["sources"]["cluster"];
    let roles = of_kind(&docs, "ClusterRole");
    assert_eq!(roles.len(), 1);
    let mut cluster_wide = needed(REQUIRED_PERMISSIONS, None);
    if source.get("enrich").is_some() {
        cluster_wide.extend(needed(ENRICH_PERMISSIONS, None));
    }
    assert_eq!(grants(roles[0]), cluster_wide);
    let binding = of_kind(&docs, "ClusterRoleBinding")[0];
    assert_eq!(binding["roleRef"]["name"], roles[0]["metadata"]["name"]);
    let account = of_kind(&docs, "ServiceAccount")[0];
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);

    // Leader election: its own Lease only, in the namespace the config names.
    let election = &source["leader_election"];
    let role = of_kind(&docs, "Role")[0];
    assert_eq!(
        role["metadata"]["namespace"].as_str(),
        election["namespace"].as_str()
    );
    assert_eq!(
        grants(role),
        needed(LEADER_ELECTION_PERMISSIONS, election["lease_name"].as_str())
    );
    let binding = of_kind(&docs, "RoleBinding")[0];
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
}

#[test]
fn the_sidecar_variant_watches_its_own_namespace_with_a_namespaced_role() {
    let docs = documents_in("examples/kubernetes/sidecar");
    assert!(
        of_kind(&docs, "ClusterRole").is_empty(),
        "no cluster-wide rights"
    );
    let role = of_kind(&docs, "Role")[0];
    assert_eq!(grants(role), needed(REQUIRED_PERMISSIONS, None));
    let config_map = of_kind(&docs, "ConfigMap")[0];
    let config = pipeline(config_map, "sidecar.yaml#kollate.toml");
    let text = config_map["data"]["kollate.toml"].as_str().unwrap();
    assert!(text.contains("namespaces = [\"${POD_NAMESPACE}\"]"));
    assert!(config.global.api.enabled);
    let deployment = of_kind(&docs, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_sequence().unwrap();
    assert_eq!(containers.len(), 2, "the application and kollate");
    let kollate = containers.iter().find(|c| c["name"] == "kollate").unwrap();
    assert_eq!(kollate["env"][0]["name"], "POD_NAMESPACE");
    assert_eq!(kollate["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["serviceAccountName"], role_subject(&docs));
    assert_eq!(
        of_kind(&docs, "Kustomization")[0]["resources"]
            .as_sequence()
            .unwrap()
            .len(),
        1
    );
}

fn role_subject(docs: &[Value]) -> Value {
    of_kind(docs, "RoleBinding")[0]["subjects"][0]["name"].clone()
}

#[test]
fn the_deployment_runs_the_configmap_pipeline_safely() {
    let docs = documents();
    let config_map = of_kind(&docs, "ConfigMap")[0];
    let text = config_map["data"]["kollate.toml"].as_str().unwrap();
    let config = pipeline(config_map, "configmap.yaml#kollate.toml");
    assert!(config.global.api.enabled, "probes need the API");
    let port: u16 = config
        .global
        .api
        .address
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();

    let deployment = of_kind(&docs, "Deployment")[0];
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        pod["serviceAccountName"],
        of_kind(&docs, "ServiceAccount")[0]["metadata"]["name"]
    );
    assert_eq!(
        container["ports"][0]["containerPort"].as_u64(),
        Some(u64::from(port))
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        deployment["spec"]["replicas"], 2,
        "leader election makes two safe"
    );
    assert_eq!(
        container["env"][0]["name"], "POD_NAME",
        "the identity in the Lease"
    );
    // The only writable place is the data volume, and that is where the config writes.
    let data_mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "data")
        .unwrap();
    assert_eq!(
        Path::new(data_mount["mountPath"].as_str().unwrap()),
        config.global.data_dir
    );
    let config_mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "config")
        .unwrap();
    let args: Vec<&str> = container["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_arg = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    assert!(config_arg.starts_with(config_mount["mountPath"].as_str().unwrap()));
    assert!(
        text.contains("/var/lib/kollate/events/"),
        "file sink writes under the data volume"
    );

    let kustomization = of_kind(&docs, "Kustomization")[0];
    let listed = kustomization["resources"].as_sequence().unwrap().len();
    assert_eq!(listed, 5, "every manifest is in the kustomization");
}
