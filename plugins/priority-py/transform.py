"""Labels every event with an on-call priority, P1 (page now) to P4 (look later).

From kollate's severity: critical -> P1, error -> P2, warning -> P3, info or unclassified ->
P4. Namespaces matching one of `urgent_namespaces` (exact, or a prefix ending in `*`) are
raised one step (P2 -> P1). Config:

    config = { urgent_namespaces = ["prod-*", "payments"], label = "priority" }
"""

import json

from componentize_py_types import Err
from wit_world.exports import transform
from wit_world.imports import host, types

RANK = {
    types.Severity.CRITICAL: 1,
    types.Severity.ERROR: 2,
    types.Severity.WARNING: 3,
    types.Severity.INFO: 4,
}


class Plugin(transform.Plugin):
    def __init__(self, urgent, label):
        self.exact = {n for n in urgent if not n.endswith("*")}
        self.prefixes = [n[:-1] for n in urgent if n.endswith("*")]
        self.label = label

    @classmethod
    def open(cls, config):
        try:
            settings = json.loads(config or "{}")
        except ValueError as e:
            raise Err(f"priority config is not JSON: {e}")
        urgent = settings.get("urgent_namespaces", [])
        if not isinstance(urgent, list) or not all(isinstance(n, str) for n in urgent):
            raise Err("priority config: `urgent_namespaces` must be a list of strings")
        host.log(host.Level.DEBUG, f"priority: {len(urgent)} urgent namespace pattern(s)")
        return cls(urgent, settings.get("label", "priority"))

    def urgent(self, namespace):
        return namespace in self.exact or any(namespace.startswith(p) for p in self.prefixes)

    def process(self, batch):
        # Strings arrive as spans of one shared buffer (see wit/transform.wit).
        text = batch.text

        def s(span):
            return text[span.start : span.start + span.len].decode()

        out = []
        for event in batch.events:
            rank = RANK.get(event.severity, 4)
            if rank > 1 and self.urgent(s(event.object.namespace) or s(event.namespace)):
                rank -= 1
            value = f"P{rank}"
            first, n = event.labels.start, event.labels.len
            current = {s(k): s(v) for k, v in batch.pairs[first : first + n]}
            if current.get(self.label) == value:
                out.append(types.Disposition_Pass())
            else:
                # Only the label goes back to the host.
                out.append(types.Disposition_SetLabels([(self.label, value)]))
        return out

    def tick(self, now, final):
        return []
