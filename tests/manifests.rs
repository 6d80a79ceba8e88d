//! The Kubernetes manifests in `examples/kubernetes/` parse, hang together, carry a valid
//! pipeline, and grant exactly the API calls the `kubernetes_events` source makes.

use std::collections::BTreeSet;
use std::path::Path;

use kollate::sources::kubernetes_events::REQUIRED_PERMISSIONS;
use serde::Deserialize;
use serde_yaml::Value;

fn documents() -> Vec<Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/kubernetes");
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

#[test]
fn rbac_grants_exactly_what_the_source_calls() {
    let docs = documents();
    let roles = of_kind(&docs, "ClusterRole");
    assert_eq!(roles.len(), 1);
    let mut granted = BTreeSet::new();
    for rule in roles[0]["rules"].as_sequence().unwrap() {
        for group in rule["apiGroups"].as_sequence().unwrap() {
            for resource in rule["resources"].as_sequence().unwrap() {
                for verb in rule["verbs"].as_sequence().unwrap() {
                    granted.insert((
                        group.as_str().unwrap().to_owned(),
                        resource.as_str().unwrap().to_owned(),
                        verb.as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    let needed: BTreeSet<_> = REQUIRED_PERMISSIONS
        .iter()
        .map(|(g, r, v)| (g.to_string(), r.to_string(), v.to_string()))
        .collect();
    assert_eq!(granted, needed);
    let binding = of_kind(&docs, "ClusterRoleBinding")[0];
    assert_eq!(binding["roleRef"]["name"], roles[0]["metadata"]["name"]);
    let account = of_kind(&docs, "ServiceAccount")[0];
    assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
}

#[test]
fn the_deployment_runs_the_configmap_pipeline_safely() {
    let docs = documents();
    let config_map = of_kind(&docs, "ConfigMap")[0];
    let text = config_map["data"]["kollate.toml"].as_str().unwrap();
    let config = kollate::config::Config::from_str_with(
        text,
        Path::new("configmap.yaml#kollate.toml"),
        &|_| None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
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
