"""The service's database access: one repository module per aggregate (stations, scans and
results, audit log and signatures, model activations, users and tokens, reviews and the
queue), combined into one ``Records`` object for the callers.

Every write that an auditor cares about appends its audit entry (``audit.py``) in the same
transaction, and results and reviews are signed there too when the service's key is set
(``signer``; the API's start-up sets it): the data, its signature and its audit entry are
stored together or not at all. ``actor`` arguments say who did it (``audit.actor_of``).
"""

from __future__ import annotations

from inference.service.records.activations import ActivationRecords
from inference.service.records.audit_log import AuditRecords
from inference.service.records.base import DuplicateName, Repository
from inference.service.records.identifiers import IdentifierRecords, Related, RelatedPage
from inference.service.records.reviews import (
    REVIEW_STATUSES,
    QueueItem,
    QueuePage,
    ReviewRecords,
    ReviewState,
)
from inference.service.records.scans import Page, ScanRecords
from inference.service.records.stations import StationRecords, StationRevoked
from inference.service.records.users import UserRecords

__all__ = [
    "REVIEW_STATUSES",
    "DuplicateName",
    "Page",
    "QueueItem",
    "QueuePage",
    "Records",
    "Related",
    "RelatedPage",
    "ReviewState",
    "StationRevoked",
]


class Records(
    StationRecords,
    ScanRecords,
    AuditRecords,
    ActivationRecords,
    UserRecords,
    ReviewRecords,
    IdentifierRecords,
    Repository,
):
    """Every repository over one engine and one ``signer``: what the service, the CLI and
    the exports use, so none of them needs to know which aggregate a query belongs to."""
