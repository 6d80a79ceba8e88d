//! Scoring a correlator's incidents against the simulator's ground truth.
//!
//! Grouping is judged with B-cubed precision and recall over the events of the true
//! incidents: per event, how much of its predicted group belongs to its true incident and how
//! much of its true incident its predicted group holds. B-cubed does not reward lumping
//! everything together or splitting everything apart, and noise is left out of the item set so
//! a stream's many routine events cannot dilute it; what an engine does with noise shows in
//! the false-incident rate instead. It is computed twice: over failure signals only (root
//! causes and symptoms, what an engine must get right) and with context (the story around
//! them). Root causes are judged top-1: the predicted incident holding most of a true
//! incident's signals must name one of its accepted root-cause events.

use std::collections::{HashMap, HashSet};
use std::fmt;

use super::{Role, TrueIncident, Truth};

/// B-cubed precision, recall and their harmonic mean.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bcubed {
    /// Mean share of an event's predicted group that is in its true incident.
    pub precision: f64,
    /// Mean share of an event's true incident that is in its predicted group.
    pub recall: f64,
    /// Harmonic mean of the two.
    pub f1: f64,
}

/// How well predicted incidents match the truth.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Score {
    /// B-cubed over root-cause and symptom events of true incidents.
    pub signals: Bcubed,
    /// B-cubed over all events of true incidents.
    pub with_context: Bcubed,
    /// Share of true incidents whose best-matching predicted incident names an accepted root cause.
    pub root_cause_top1: f64,
    /// Incidents the engine reported.
    pub reported: usize,
    /// True incidents.
    pub true_incidents: usize,
    /// Distinct predicted incident ids.
    pub predicted: usize,
    /// Share of predicted incidents whose members are mostly noise.
    pub false_incident_rate: f64,
}

impl Score {
    /// The markdown table header matching [`Score`]'s `Display` row.
    pub fn header() -> &'static str {
        "| B³ P signals | B³ R signals | B³ F1 signals | B³ P context | B³ R context | B³ F1 context | root cause top-1 | reported / true | false incidents |\n\
         |---|---|---|---|---|---|---|---|---|"
    }
}

impl fmt::Display for Score {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, c) = (self.signals, self.with_context);
        write!(
            f,
            "| {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} | {} / {} | {:.3} |",
            s.precision,
            s.recall,
            s.f1,
            c.precision,
            c.recall,
            c.f1,
            self.root_cause_top1,
            self.reported,
            self.true_incidents,
            self.false_incident_rate
        )
    }
}

/// B-cubed over `items` (uid, true incident); an item without a prediction is alone.
fn bcubed(items: &[(&str, &str)], predicted: &HashMap<String, String>) -> Bcubed {
    if items.is_empty() {
        return Bcubed::default();
    }
    let mut true_size: HashMap<&str, usize> = HashMap::new();
    let mut pred_size: HashMap<&str, usize> = HashMap::new();
    let mut overlap: HashMap<(&str, &str), usize> = HashMap::new();
    for &(uid, t) in items {
        *true_size.entry(t).or_default() += 1;
        if let Some(p) = predicted.get(uid) {
            *pred_size.entry(p).or_default() += 1;
            *overlap.entry((p, t)).or_default() += 1;
        }
    }
    let (mut precision, mut recall) = (0.0, 0.0);
    for &(uid, t) in items {
        let (both, size) = match predicted.get(uid) {
            Some(p) => (overlap[&(p.as_str(), t)], pred_size[p.as_str()]),
            None => (1, 1),
        };
        precision += both as f64 / size as f64;
        recall += both as f64 / true_size[t] as f64;
    }
    let n = items.len() as f64;
    let (precision, recall) = (precision / n, recall / n);
    let f1 = if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    };
    Bcubed {
        precision,
        recall,
        f1,
    }
}

/// Scores `predicted` (event uid → predicted incident id) and `root_causes` (predicted
/// incident id → root-cause event uid) against the truth; `reported` is how many incidents
/// the engine reported.
pub fn score(
    truth: &[Truth],
    incidents: &[TrueIncident],
    predicted: &HashMap<String, String>,
    root_causes: &HashMap<String, String>,
    reported: usize,
) -> Score {
    let items = |signals_only: bool| -> Vec<(&str, &str)> {
        truth
            .iter()
            .filter(|t| !signals_only || t.role != Role::Context)
            .filter_map(|t| Some((t.uid.as_str(), t.incident.as_deref()?)))
            .collect()
    };
    let mut hits = 0;
    for inc in incidents {
        let mine = |t: &&Truth| t.incident.as_deref() == Some(inc.label.as_str());
        let signal: Vec<&str> = truth
            .iter()
            .filter(mine)
            .filter(|t| t.role != Role::Context)
            .map(|t| t.uid.as_str())
            .collect();
        let members = if signal.is_empty() {
            truth.iter().filter(mine).map(|t| t.uid.as_str()).collect()
        } else {
            signal
        };
        let mut held: HashMap<&str, usize> = HashMap::new();
        for uid in members {
            if let Some(p) = predicted.get(uid) {
                *held.entry(p).or_default() += 1;
            }
        }
        let best = held
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(a.0)));
        let root = best.and_then(|(p, _)| root_causes.get(p));
        if root.is_some_and(|r| inc.accepted_root_causes.contains(r)) {
            hits += 1;
        }
    }
    let noise: HashSet<&str> = truth
        .iter()
        .filter(|t| t.incident.is_none())
        .map(|t| t.uid.as_str())
        .collect();
    let known: HashSet<&str> = truth.iter().map(|t| t.uid.as_str()).collect();
    let is_noise = |uid: &str| noise.contains(uid) || !known.contains(uid);
    let mut groups: HashMap<&str, (usize, usize)> = HashMap::new();
    for (uid, p) in predicted {
        let g = groups.entry(p).or_default();
        g.0 += 1;
        g.1 += usize::from(is_noise(uid));
    }
    for (p, uid) in root_causes {
        groups.entry(p).or_insert((1, usize::from(is_noise(uid))));
    }
    let false_groups = groups.values().filter(|(n, noisy)| 2 * noisy > *n).count();
    let share = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    Score {
        signals: bcubed(&items(true), predicted),
        with_context: bcubed(&items(false), predicted),
        root_cause_top1: share(hits, incidents.len()),
        reported,
        true_incidents: incidents.len(),
        predicted: groups.len(),
        false_incident_rate: share(false_groups, groups.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    /// Truth: incident A = a1 (root), a2 (symptom), a3 (context); incident B = b1 (root),
    /// b2 (symptom); n1, n2 noise. Predicted: X = {a1, a2, b1, n1}, Y = {a3}, Z = {n2}, b2
    /// unassigned. Root causes: X → a1, Y → a3, Z → n2.
    ///
    /// Signals (a1 a2 b1 b2; true A = {a1 a2}, B = {b1 b2}; predicted X∩items = {a1 a2 b1}):
    /// a1: P 2/3 R 2/2; a2: P 2/3 R 1; b1: P 1/3 R 1/2; b2 alone: P 1 R 1/2.
    /// P = (2/3+2/3+1/3+1)/4 = 2/3, R = (1+1+1/2+1/2)/4 = 3/4, F1 = 2·(1/2)/(17/12) = 12/17.
    ///
    /// With context (adds a3; A = {a1 a2 a3}; Y = {a3}):
    /// a1: P 2/3 R 2/3; a2: P 2/3 R 2/3; a3: P 1 R 1/3; b1: P 1/3 R 1/2; b2: P 1 R 1/2.
    /// P = (11/3)/5 = 11/15, R = (8/3)/5 = 8/15, F1 = 2·(88/225)/(19/15) = 176/285.
    ///
    /// Root cause: A's signals are both in X, whose root a1 is accepted: hit. B's signals are
    /// b1 (in X) and b2 (nowhere): best is X, root a1 is not B's: miss. Top-1 = 1/2.
    /// False incidents: X is 1/4 noise, Y none, Z all: 1 of 3.
    #[test]
    fn hand_computed_example() {
        let t = |uid: &str, inc: Option<&str>, role| Truth {
            uid: uid.into(),
            incident: inc.map(Into::into),
            role,
        };
        let truth = vec![
            t("a1", Some("A"), Role::RootCause),
            t("a2", Some("A"), Role::Symptom),
            t("a3", Some("A"), Role::Context),
            t("b1", Some("B"), Role::RootCause),
            t("b2", Some("B"), Role::Symptom),
            t("n1", None, Role::Context),
            t("n2", None, Role::Context),
        ];
        let inc = |label: &str, root: &str| TrueIncident {
            label: label.into(),
            kind: "test".into(),
            accepted_root_causes: vec![root.into()],
        };
        let incidents = vec![inc("A", "a1"), inc("B", "b1")];
        let map = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(a, b)| ((*a).into(), (*b).into()))
                .collect()
        };
        let predicted = map(&[
            ("a1", "X"),
            ("a2", "X"),
            ("b1", "X"),
            ("n1", "X"),
            ("a3", "Y"),
            ("n2", "Z"),
        ]);
        let roots = map(&[("X", "a1"), ("Y", "a3"), ("Z", "n2")]);
        let s = score(&truth, &incidents, &predicted, &roots, 3);
        close(s.signals.precision, 2.0 / 3.0);
        close(s.signals.recall, 0.75);
        close(s.signals.f1, 12.0 / 17.0);
        close(s.with_context.precision, 11.0 / 15.0);
        close(s.with_context.recall, 8.0 / 15.0);
        close(s.with_context.f1, 176.0 / 285.0);
        close(s.root_cause_top1, 0.5);
        close(s.false_incident_rate, 1.0 / 3.0);
        assert_eq!((s.reported, s.true_incidents, s.predicted), (3, 2, 3));
        assert_eq!(
            s.to_string(),
            "| 0.667 | 0.750 | 0.706 | 0.733 | 0.533 | 0.618 | 0.500 | 3 / 2 | 0.333 |"
        );
        assert_eq!(Score::header().lines().count(), 2);
    }
}
