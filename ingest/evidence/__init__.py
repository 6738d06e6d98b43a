"""Kept six-100 evidence: minute facts per site and day, refreshed from InfluxDB for the
minutes the writers mark, so the compliance report reads them instead of raw points
(issue #12 item 7; api/README.md "Kept evidence")."""

from ingest.evidence.refresh import EvidenceKeeper
from ingest.evidence.store import DayFacts, EvidenceStore, evidence_path, marks_of

__all__ = ["DayFacts", "EvidenceKeeper", "EvidenceStore", "evidence_path", "marks_of"]
