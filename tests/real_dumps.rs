//! Every real Event dump decodes without error, yielding the number of events (and the sum
//! of their `count`s) that the dumps' provenance notes (SOURCES.md) record, counted there
//! independently of kollate.
//!
//! The permissively licensed dumps are in `tests/fixtures/events`; the two unlicensed ones
//! are read in place from `../shared/data/events` (present in CI; `KOLLATE_SHARED_EVENTS`
//! overrides the place). Without that folder the
//! test says so loudly and skips those two.

use std::path::{Path, PathBuf};

use kollate::format::{Decoded, Limits, Reader};

const LIMITS: Limits = Limits {
    max_document_bytes: 64 << 20,
    max_message_bytes: 64 << 10,
};

/// (path under the dumps folder, events, sum of counts or None when SOURCES.md gives none).
const EXPECTED: &[(&str, usize, Option<u64>)] = &[
    ("jgyy-ckad/default/events.yaml", 488, Some(2_001)),
    (
        "jgyy-ckad/default/events.events.k8s.io.yaml",
        488,
        Some(2_126),
    ),
    (
        "replicatedhq-troubleshoot/support-bundle-2021-03-24T00_39_51/cluster-resources/events/default.json",
        6,
        Some(32_844),
    ),
    (
        "replicatedhq-troubleshoot/support-bundle-2021-03-24T00_39_51/cluster-resources/events/qakots.json",
        4,
        Some(32_544),
    ),
    // SOURCES.md sums `count` (26,436, a missing count taken as 1); one FailedScheduling event
    // carries its repeats only in `series.count` (13,386), which kollate counts: 26,436 + 13,385.
    (
        "replicatedhq-troubleshoot/support-bundle-2021-03-24T00_39_51/cluster-resources/events/test.json",
        369,
        Some(39_821),
    ),
    (
        "replicatedhq-troubleshoot/pkg/analyze/files/events/message-container-creating-failed-mount.json",
        76,
        Some(3_168),
    ),
    // Likewise one scheduler event with `series.count` 3 and no `count`: 34 + 2.
    (
        "replicatedhq-troubleshoot/pkg/analyze/files/events/message-image-pull-fail.json",
        17,
        Some(36),
    ),
    (
        "replicatedhq-troubleshoot/pkg/analyze/files/events/message-pod-init-crashloop-backoff.json",
        17,
        Some(954),
    ),
    (
        "rancher-support-bundle-kit/tests/integration/sampleSupportBundle/yamls/namespaced/harvester-system/v1/events.yaml",
        8,
        Some(8),
    ),
    (
        "rancher-support-bundle-kit/tests/integration/sampleSupportBundle/yamls/namespaced/harvester-system/events.k8s.io/v1/events.yaml",
        8,
        Some(8),
    ),
    (
        "rancher-support-bundle-kit/tests/integration/sampleSupportBundle/yamls/namespaced/default/v1/events.yaml",
        1,
        Some(34_075),
    ),
    (
        "rancher-support-bundle-kit/tests/integration/sampleSupportBundle/yamls/namespaced/default/events.k8s.io/v1/events.yaml",
        1,
        Some(34_075),
    ),
    (
        "openshift-must-gather-clean/pkg/cli/testfiles/release-4.8/namespaces/kube-system/core/events.yaml",
        11,
        None,
    ),
    (
        "vmware-tanzu-sonobuoy/results-0.10/resources/ns/kube-system/Events.json",
        135,
        Some(184),
    ),
    (
        "vmware-tanzu-sonobuoy/results-0.10/resources/ns/default/Events.json",
        23,
        Some(49),
    ),
    (
        "vmware-tanzu-sonobuoy/results-0.10/resources/ns/heptio-sonobuoy/Events.json",
        56,
        Some(56),
    ),
    (
        "chris-sanders-troubleshoot-mcp-server/support-bundle-2025-04-11T14_05_31/cluster-resources/events/kube-system.json",
        104,
        Some(139),
    ),
    (
        "chris-sanders-troubleshoot-mcp-server/support-bundle-2025-04-11T14_05_31/cluster-resources/events/default.json",
        12,
        Some(15),
    ),
    (
        "chris-sanders-troubleshoot-mcp-server/support-bundle-2025-04-11T14_05_31/cluster-resources/events/cert-manager.json",
        30,
        Some(30),
    ),
    (
        "chris-sanders-troubleshoot-mcp-server/support-bundle-2025-04-11T14_05_31/cluster-resources/events/traefik.json",
        18,
        Some(18),
    ),
    (
        "chris-sanders-troubleshoot-mcp-server/support-bundle-2025-04-11T14_05_31/cluster-resources/events/wg-easy.json",
        11,
        Some(11),
    ),
    (
        "chris-sanders-troubleshoot-mcp-server/support-bundle-2025-04-11T14_05_31/rqlite-status/rqlite-status-events.json",
        7,
        Some(9),
    ),
    (
        "chris-sanders-troubleshoot-mcp-server/support-bundle-2025-04-11T14_05_31/rqlite-nodes/rqlite-nodes-events.json",
        5,
        Some(8),
    ),
];

/// The unlicensed dumps, only ever read in place.
const UNLICENSED: &[(&str, usize, Option<u64>)] = &[
    (
        "tonychengtw-k8s-ha/cluster-info/default/events.json",
        2_680,
        Some(38_831),
    ),
    (
        "tonychengtw-k8s-ha/cluster-info/kube-system/events.json",
        54,
        Some(499),
    ),
    (
        "epicapex-k8s-arena/kube-system/events.json",
        4,
        Some(99_946),
    ),
    ("epicapex-k8s-arena/default/events.json", 3, Some(3)),
];

fn decode(path: &Path) -> (Vec<kollate::event::Event>, Vec<String>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = Reader::new(std::io::BufReader::new(file), LIMITS);
    let mut events = Vec::new();
    let mut problems = Vec::new();
    let mut take = |d: Decoded| match d {
        Decoded::Event(e, _) => events.push(e),
        Decoded::Discarded(line) => problems.push(format!("line {line}: discarded")),
        Decoded::Warning(line, m) | Decoded::Error(line, m) => {
            problems.push(format!("line {line}: {m}"))
        }
    };
    reader.read_to_end(&mut take).unwrap();
    (events, problems)
}

fn check(root: &Path, expected: &[(&str, usize, Option<u64>)]) {
    for (rel, events, sum) in expected {
        let path = root.join(rel);
        let (decoded, problems) = decode(&path);
        assert!(problems.is_empty(), "{rel}: {problems:?}");
        let total: u64 = decoded.iter().map(|e| e.count).sum();
        println!("{rel}: {} events, count sum {total}", decoded.len());
        assert_eq!(decoded.len(), *events, "{rel}: events");
        if let Some(sum) = sum {
            assert_eq!(total, *sum, "{rel}: sum of counts");
        }
        for e in &decoded {
            assert!(
                !e.object.kind.is_empty() || !e.object.namespace.is_empty() || e.reason.is_empty(),
                "{rel}: an event with a reason has an involved object"
            );
        }
    }
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events")
}

#[test]
fn every_copied_dump_decodes_completely() {
    check(&fixtures(), EXPECTED);
    let copied = walk(&fixtures())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e != "md"))
        .count();
    assert_eq!(copied, EXPECTED.len(), "every copied dump is checked");
}

#[test]
fn unlicensed_dumps_decode_in_place() {
    // Next to the checkout, wherever it is cloned, or where the workspace keeps it.
    let shared = std::env::var_os("KOLLATE_SHARED_EVENTS")
        .map(PathBuf::from)
        .into_iter()
        .chain([
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/events"),
            PathBuf::from("/work/shared/data/events"),
        ])
        .find(|p| p.is_dir())
        .unwrap_or_else(|| PathBuf::from("../shared/data/events"));
    if !shared.is_dir() {
        eprintln!(
            "!!! SKIPPED: {} is missing; the unlicensed dumps were not checked !!!",
            shared.display()
        );
        return;
    }
    check(&shared, UNLICENSED);
}

#[test]
fn both_api_shapes_of_the_same_events_normalise_alike() {
    // jgyy-ckad holds the same 488 events as core/v1 and as events.k8s.io/v1, captured ~20 s
    // apart: apart from counts and times that moved on, the records must be identical.
    let root = fixtures().join("jgyy-ckad/default");
    let (core, _) = decode(&root.join("events.yaml"));
    let (new, _) = decode(&root.join("events.events.k8s.io.yaml"));
    let by_uid: std::collections::HashMap<_, _> = new.iter().map(|e| (e.uid.clone(), e)).collect();
    let mut compared = 0;
    for a in &core {
        let b = by_uid[&a.uid];
        assert_eq!(
            (&a.reason, &a.message, &a.object, &a.event_type),
            (&b.reason, &b.message, &b.object, &b.event_type),
            "uid {}",
            a.uid
        );
        assert_eq!(a.first_timestamp, b.first_timestamp, "uid {}", a.uid);
        assert!(
            b.count >= a.count,
            "the later capture never has fewer occurrences"
        );
        compared += 1;
    }
    assert_eq!(compared, 488);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
