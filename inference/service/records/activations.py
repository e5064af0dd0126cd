"""Model activations: which model served from when, and why (configuration or roll-out)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from inference.service import audit
from inference.service.db import ModelActivation
from inference.service.facts import activation_fact_of, fact_sha256
from inference.service.records.base import Repository


class ActivationRecords(Repository):
    """Which model went live when, from where (configuration or an admin roll-out)."""

    def add_activation(
        self, *, source: str, path: str, info: dict[str, str], checks: dict[str, Any]
    ) -> int:
        """Record (and log) a model that went live; returns the activation's id."""
        with self.session() as s:
            row = ModelActivation(
                source=source,
                path=path,
                name=info["name"],
                version=info["version"],
                sha256=info["sha256"],
                checks=checks,
            )
            s.add(row)
            s.flush()
            audit.append(
                s,
                "model.activated",
                "admin" if source == "admin" else "service",
                info["version"],
                {
                    "activation_id": row.id,
                    "source": source,
                    "path": path,
                    "name": info["name"],
                    "sha256": info["sha256"],
                    "row_sha256": fact_sha256(activation_fact_of(row)),  # every column
                },
            )
            return row.id

    def latest_activation(self, source: str | None = None) -> ModelActivation | None:
        with self.session() as s:
            q = select(ModelActivation)
            if source is not None:
                q = q.where(ModelActivation.source == source)
            return s.scalars(q.order_by(ModelActivation.id.desc()).limit(1)).first()
