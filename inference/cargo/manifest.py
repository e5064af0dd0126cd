"""Declared against observed: the manifest check of each container.

The station sends the declared manifest in the scan's metadata (a line may name its
container by index or ISO id; a line naming none belongs to the only container, or to
the load as a whole). Per container, the declared lines are compared with the observed
contents (inference.cargo.contents) and each disagreement becomes a discrepancy:

- declared_empty_but_loaded: nothing declared for the box, the image shows a load.
- declared_loaded_but_empty: goods declared, the box is empty.
- weight_mismatch: the observed mass is off the declared weight by more than
  WEIGHT_TOLERANCE (the mass estimate's own error is ~10 %, shippers round).
- false_description: the declared goods' material class (from the HS chapter) is not
  what dual energy sees (organic declared, metal seen, or the reverse).
- undeclared_goods: a load of another material than declared, and heavier than declared.

No manifest: nothing is checked (status "no_manifest"). No container found: nothing is
checked either (status "no_container"): a guess would send officers after nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from inference.cargo.containers import Container
from inference.cargo.contents import Contents
from inference.contracts import ManifestCheck, ManifestDiscrepancy
from inference.scan.metadata import ManifestItem, ScanMetadata

WEIGHT_TOLERANCE = 1.35  # observed / declared outside [1/1.35, 1.35] is a mismatch
# HS chapters by what a radiograph sees of them: organic (low Z), metal, or a mix.
_ORGANIC = set(range(1, 25)) | set(range(39, 68))
_METAL = set(range(72, 90))
_MINERAL = set(range(25, 28)) | set(range(68, 71))


def hs_material(hs_code: str) -> str | None:
    """The material class a radiograph would see for an HS code (None: cannot say)."""
    digits = hs_code.replace(".", "").replace(" ", "")
    chapter = int(digits[:2]) if digits[:2].isdigit() else 0
    if chapter in _ORGANIC:
        return "organic"
    if chapter in _METAL:
        return "metal"
    if chapter in _MINERAL:
        return "mixed"
    return None


def _kg(value: float) -> str:
    return f"{value:,.0f} kg"


def _goods(lines: Sequence[ManifestItem]) -> str:
    names = [line.description or f"HS {line.hs_code}" for line in lines]
    return names[0] if len(names) == 1 else f"{len(names)} lines ({', '.join(names[:3])})"


def _weight_score(ratio: float) -> float:
    """0.5 at the tolerance, 1 at twice (or half) the declared weight."""
    over = abs(math.log(ratio)) - math.log(WEIGHT_TOLERANCE)
    return round(min(1.0, 0.5 + 0.5 * over / (math.log(2.0) - math.log(WEIGHT_TOLERANCE))), 3)


def _lines_by_container(
    meta: ScanMetadata, n: int
) -> tuple[list[list[ManifestItem]], list[ManifestItem]]:
    """Declared lines per found container, and those that name no container."""
    per: list[list[ManifestItem]] = [[] for _ in range(n)]
    loose: list[ManifestItem] = []
    for line in meta.manifest:
        ref = line.container
        if isinstance(ref, str):
            ref = meta.container_ids.index(ref) if ref in meta.container_ids else None
        if ref is None:
            (per[0] if n == 1 else loose).append(line)
        else:
            per[min(ref, n - 1)].append(line)  # a box the image does not split: the last
    return per, loose


def check_manifest(
    meta: ScanMetadata, found: Sequence[tuple[Container, Contents]]
) -> ManifestCheck:
    """The manifest check of one scan (see the module)."""
    if not meta.manifest_declared:
        return ManifestCheck(status="no_manifest", discrepancies=[])
    if not found:
        return ManifestCheck(status="no_container", discrepancies=[])
    per, loose = _lines_by_container(meta, len(found))
    out: list[ManifestDiscrepancy] = []
    for k, ((container, seen), lines) in enumerate(zip(found, per, strict=True)):
        box = list(seen.load_box or container.box)
        where = f"container {k + 1}"
        if not lines and not loose:
            if not seen.empty:
                out.append(
                    ManifestDiscrepancy(
                        kind="declared_empty_but_loaded",
                        score=seen.score,
                        container=k,
                        box=box,
                        explanation=(
                            f"{where} declared empty; the image holds about "
                            f"{_kg(seen.mass_kg)} of {seen.kind} goods"
                        ),
                    )
                )
            continue
        if not lines:
            continue  # only loose lines: checked on the whole load below
        declared = sum(line.declared_weight_kg or 0.0 for line in lines)
        goods = _goods(lines)
        if seen.empty:
            out.append(
                ManifestDiscrepancy(
                    kind="declared_loaded_but_empty",
                    score=seen.score,
                    container=k,
                    box=list(container.box),
                    explanation=(
                        f"{where}: declared {_kg(declared)} of {goods}; the image shows it empty"
                    ),
                )
            )
            continue
        out += _compare(k, where, lines, goods, declared, seen, box)
    if loose:
        out += _compare_loose(loose, found)
    status = "discrepancies" if out else "consistent"
    return ManifestCheck(status=status, discrepancies=out)


def _compare(
    k: int,
    where: str,
    lines: Sequence[ManifestItem],
    goods: str,
    declared: float,
    seen: Contents,
    box: list[int],
) -> list[ManifestDiscrepancy]:
    """Weight and material of one loaded container against its declared lines."""
    classes = {hs_material(line.hs_code) for line in lines}
    known = seen.material in ("organic", "metal")
    clash = (
        known and None not in classes and "mixed" not in classes and seen.material not in classes
    )
    ratio = seen.mass_kg / declared if declared > 0 else 1.0
    heavy = ratio > WEIGHT_TOLERANCE
    said = f"{where}: declared {_kg(declared)} of {goods}"
    holds = f"the image holds about {_kg(seen.mass_kg)} of {seen.kind} goods"
    if clash:
        declared_class = next(iter(classes))
        return [
            ManifestDiscrepancy(
                kind="undeclared_goods" if heavy else "false_description",
                score=0.8 if heavy else 0.7,
                container=k,
                box=box,
                explanation=f"{said} ({declared_class}); {holds}",
            )
        ]
    if declared > 0 and not (1 / WEIGHT_TOLERANCE <= ratio <= WEIGHT_TOLERANCE):
        return [
            ManifestDiscrepancy(
                kind="weight_mismatch",
                score=_weight_score(ratio),
                container=k,
                box=box,
                explanation=f"{said}; {holds}",
            )
        ]
    return []


def _compare_loose(
    loose: Sequence[ManifestItem], found: Sequence[tuple[Container, Contents]]
) -> list[ManifestDiscrepancy]:
    """Lines naming no container on a multi-container vehicle: the total weight only."""
    declared = sum(line.declared_weight_kg or 0.0 for line in loose)
    seen = sum(c.mass_kg for _, c in found)
    if declared <= 0:
        return []
    ratio = max(seen, 1.0) / declared
    if 1 / WEIGHT_TOLERANCE <= ratio <= WEIGHT_TOLERANCE:
        return []
    x0 = min(c.box[0] for c, _ in found)
    y0 = min(c.box[1] for c, _ in found)
    x1 = max(c.box[2] for c, _ in found)
    y1 = max(c.box[3] for c, _ in found)
    return [
        ManifestDiscrepancy(
            kind="weight_mismatch",
            score=_weight_score(ratio),
            container=None,
            box=[x0, y0, x1, y1],
            explanation=(
                f"declared {_kg(declared)} of {_goods(loose)} (no container named); "
                f"the image holds about {_kg(seen)} in {len(found)} containers"
            ),
        )
    ]
