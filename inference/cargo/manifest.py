"""Declared against observed: the manifest check of each container.

The station sends the declared manifest in the scan's metadata (a line may name its
container by index or ISO id; a line naming none belongs to the only container, or to
the load as a whole). Per container, the declared lines are compared with the observed
contents (inference.cargo.contents) and each disagreement becomes a discrepancy:

- declared_empty_but_loaded: nothing declared for the box, the image shows a load.
- declared_loaded_but_empty: goods declared, the box is empty.
- weight_mismatch: the observed mass is off the declared weight by more than the mass
  estimate's own error explains: z = |ln(observed / declared)| / WEIGHT_SIGMA[material],
  the spread measured on synthetic scans (bench/cargo.py), flagged above WEIGHT_Z (set
  so that at most ~5 % of consistent scans are flagged; the median error is ~10 % but
  the tail is long: bulk and machinery are under-weighed).
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

# Spread (sigma) of ln(observed / true mass) by the material class seen, measured by
# bench/cargo.py on synthetic seed 11 (docs/cargo.md); flagged when z > WEIGHT_Z.
WEIGHT_SIGMA = {"organic": 0.30, "mixed": 0.30, "metal": 0.30, "unknown": 0.30}
WEIGHT_Z = 2.0
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


def weight_z(ratio: float, material: str) -> float:
    """How many of the mass estimate's own spreads the observed/declared ratio lies off 1:
    a flag must mean more than the estimate's error."""
    sigma = WEIGHT_SIGMA.get(material, WEIGHT_SIGMA["unknown"])
    return abs(math.log(max(ratio, 1e-6))) / sigma


def _weight_score(z: float) -> float:
    """0.5 at the flag threshold WEIGHT_Z, towards 1 as z grows (logistic in z)."""
    return round(1.0 / (1.0 + math.exp(-2.0 * (z - WEIGHT_Z))), 3)


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
    z = weight_z(ratio, seen.material)
    heavy = ratio > 1.0 and z > WEIGHT_Z
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
    if declared > 0 and z > WEIGHT_Z:
        return [
            ManifestDiscrepancy(
                kind="weight_mismatch",
                score=_weight_score(z),
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
    z = weight_z(ratio, "unknown")
    if z <= WEIGHT_Z:
        return []
    x0 = min(c.box[0] for c, _ in found)
    y0 = min(c.box[1] for c, _ in found)
    x1 = max(c.box[2] for c, _ in found)
    y1 = max(c.box[3] for c, _ in found)
    return [
        ManifestDiscrepancy(
            kind="weight_mismatch",
            score=_weight_score(z),
            container=None,
            box=[x0, y0, x1, y1],
            explanation=(
                f"declared {_kg(declared)} of {_goods(loose)} (no container named); "
                f"the image holds about {_kg(seen)} in {len(found)} containers"
            ),
        )
    ]
