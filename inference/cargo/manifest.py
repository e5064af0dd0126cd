"""Declared against observed: the manifest check of each container.

The station sends the declared manifest in the scan's metadata (a line may name its
container by index or ISO id; a line naming none belongs to the only container, or to
the load as a whole). Per container, the declared lines are compared with the observed
contents (inference.cargo.contents) and each disagreement becomes a discrepancy:

- declared_empty_but_loaded: nothing declared for the box, the image shows a load.
- declared_loaded_but_empty: goods declared, the box is empty.
- weight_mismatch: the observed mass is off the declared weight by more than the mass
  estimate's own error explains: z = ln(observed / declared) / WEIGHT_SIGMA[material],
  the spread of ln(observed / true) measured on synthetic scans (docs/cargo.md),
  flagged beyond WEIGHT_Z_HEAVY above or WEIGHT_Z_LIGHT below (the estimate's tail is
  on the light side: bulk and machinery are under-weighed).
- false_description: the declared goods' material classes (`hs_classes`, from the HS
  chapters) are not what dual energy sees: the load's low/high ratio lies past the
  midway point between the nearest allowed class's calibrated ratio and the next
  class's, by MATERIAL_MARGIN of the organic-to-metal span.
- undeclared_goods: more mass than declared and stretches of the load (SEGMENT_MM along
  the box) reading as a class no declared line allows, holding at least FOREIGN_SHARE
  of the load.
- declared_loaded_but_empty also when the box holds less than NEARLY_EMPTY of the
  declared weight (a few pallets or a hidden stack where a full load was declared).

Every check gives a score in 0..1, 0.5 at its flag threshold, whether it flags or not
(`manifest_evidence`): evaluation measures each kind's detection at a fixed false-flag
rate from them. Each kind is its own test: a load both heavier than declared and of an
undeclared class is reported as both.

No manifest: nothing is checked (status "no_manifest"). No container found: nothing is
checked either (status "no_container"): a guess would send officers after nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from inference.cargo.containers import Container
from inference.cargo.contents import Contents, class_curves
from inference.contracts import ManifestCheck, ManifestDiscrepancy
from inference.scan.metadata import ManifestItem, ScanMetadata

KINDS = (
    "declared_empty_but_loaded",
    "declared_loaded_but_empty",
    "undeclared_goods",
    "false_description",
    "weight_mismatch",
)
# Spread (sigma) of ln(observed / true mass) by the material class seen, measured on
# the tune set (docs/cargo.md: organic 0.09, mixed 0.10 about a +0.11 bias, metal 0.10
# robust with a long light tail); flagged past WEIGHT_Z_HEAVY sigmas heavier than
# declared, or WEIGHT_Z_LIGHT lighter (the estimate's tail is on the light side: steel
# plates and low loads over the trailer's stanchion boxes are under-weighed).
WEIGHT_SIGMA = {"organic": 0.10, "mixed": 0.15, "metal": 0.15, "unknown": 0.15}
WEIGHT_Z_HEAVY = 2.5
WEIGHT_Z_LIGHT = 5.0
MATERIAL_MARGIN = 0.25  # past the midway point between two classes, share of the span
MATERIAL_SCALE = 0.05  # share of the span per logistic unit of the material scores
FOREIGN_SHARE = 0.2  # share of the load of an undeclared class that counts as goods
NEARLY_EMPTY = 0.1  # a box holding less than this share of its declared weight
ORDER = ("organic", "mixed", "metal")  # falling low/high ratio (rising atomic number)
# HS chapters by the classes a radiograph may see of them (dual energy): organic (low
# Z: food, plastics, wood, paper, textiles, mineral oils), mixed (glass, stone,
# ceramics; rubber tyres with their steel cords; appliances in cartons), metal.
_HS_CLASSES: dict[range, frozenset[str]] = {
    range(1, 25): frozenset({"organic"}),
    range(25, 26): frozenset({"mixed"}),  # salt, sulphur, earths, stone, cement
    range(26, 27): frozenset({"mixed", "metal"}),  # ores
    range(27, 28): frozenset({"organic"}),  # mineral fuels and oils: hydrocarbons
    range(39, 40): frozenset({"organic"}),  # plastics
    range(40, 41): frozenset({"organic", "mixed"}),  # rubber (tyres hold steel cords)
    range(41, 68): frozenset({"organic"}),  # hides, wood, paper, textiles, footwear
    range(68, 71): frozenset({"mixed"}),  # stone, ceramics, glass
    range(72, 84): frozenset({"metal"}),  # base metals and their articles
    range(84, 90): frozenset({"metal", "mixed"}),  # machinery, electrical, vehicles
}


def hs_classes(hs_code: str) -> frozenset[str] | None:
    """The material classes a radiograph may see for an HS code (None: cannot say, as
    for chemicals, chapters 28-38, whose class depends on the product)."""
    digits = hs_code.replace(".", "").replace(" ", "")
    chapter = int(digits[:2]) if digits[:2].isdigit() else 0
    return next((v for k, v in _HS_CLASSES.items() if chapter in k), None)


def hs_material(hs_code: str) -> str | None:
    """The main material class a radiograph would see for an HS code (None: cannot say)."""
    classes = hs_classes(hs_code)
    return None if classes is None else min(classes, key=ORDER.index)


@dataclass(frozen=True)
class Candidate:
    """One check's outcome: the discrepancy it would report, and whether it does."""

    discrepancy: ManifestDiscrepancy
    flagged: bool


@dataclass(frozen=True)
class _Seen:
    """What the image shows of a container, or of several read as one load."""

    empty: bool
    p_loaded: float
    mass_kg: float
    material: str
    kind: str
    ratio: float | None
    a_load: float
    segments: tuple[tuple[float, float, float], ...]


def _seen_of(c: Contents) -> _Seen:
    return _Seen(c.empty, c.p_loaded, c.mass_kg, c.material, c.kind, c.ratio, c.a_load, c.segments)


def _seen_together(contents: Sequence[Contents]) -> _Seen:
    """Several containers read as one load (manifest lines that name no container on a
    vehicle with more): masses add, ratios and segments weighed by the loads' masses."""
    loaded = [c for c in contents if not c.empty]
    mass = sum(c.mass_kg for c in loaded)
    if not loaded:
        p = max(c.p_loaded for c in contents)
        return _Seen(True, p, 0.0, "unknown", "empty", None, 0.0, ())
    measured = [c for c in loaded if c.ratio is not None]
    weight = sum(max(c.mass_kg, 1.0) for c in measured)
    ratio = (
        sum(c.ratio * max(c.mass_kg, 1.0) for c in measured) / weight  # type: ignore[operator]
        if measured
        else None
    )
    a_load = sum(c.a_load * max(c.mass_kg, 1.0) for c in measured) / weight if measured else 0.0
    segments = tuple(
        (r, a, share * c.mass_kg / max(mass, 1.0)) for c in loaded for r, a, share in c.segments
    )
    materials = {c.material for c in loaded}
    material = materials.pop() if len(materials) == 1 else "unknown"
    kinds = sorted({c.kind for c in loaded})
    return _Seen(
        False,
        max(c.p_loaded for c in contents),
        mass,
        material,
        " and ".join(kinds),
        ratio,
        a_load,
        segments,
    )


def _kg(value: float) -> str:
    return f"{value:,.0f} kg"


def _goods(lines: Sequence[ManifestItem]) -> str:
    names = [line.description or f"HS {line.hs_code}" for line in lines]
    return names[0] if len(names) == 1 else f"{len(names)} lines ({', '.join(names[:3])})"


def _classes(allowed: frozenset[str] | None) -> str:
    return "unknown" if allowed is None else " or ".join(c for c in ORDER if c in allowed)


def _logistic(x: float) -> float:
    return round(1.0 / (1.0 + math.exp(-max(min(x, 50.0), -50.0))), 3)


def weight_z(ratio: float, material: str) -> float:
    """How many of the mass estimate's own spreads ln(observed/declared) lies from 0,
    signed (above 0: heavier than declared): a flag must mean more than the error."""
    sigma = WEIGHT_SIGMA.get(material, WEIGHT_SIGMA["unknown"])
    return math.log(max(ratio, 1e-6)) / sigma


def _weight_score(z: float) -> float:
    """0.5 at the flag threshold (WEIGHT_Z_HEAVY above, WEIGHT_Z_LIGHT below), towards 1
    as z grows past it (logistic in z)."""
    over = z - WEIGHT_Z_HEAVY if z >= 0 else -z - WEIGHT_Z_LIGHT
    return _logistic(2.0 * over)


def allowed_classes(lines: Sequence[ManifestItem]) -> frozenset[str] | None:
    """The classes the declared lines allow the load to read as: each line's, and
    what lies between them (organic and metal goods together read as mixed). None when
    a line's class cannot be told from its HS code."""
    sets = [hs_classes(line.hs_code) for line in lines]
    if not sets or any(c is None for c in sets):
        return None
    union = frozenset().union(*sets)  # type: ignore[arg-type]
    ranks = sorted(ORDER.index(c) for c in union)
    return frozenset(ORDER[ranks[0] : ranks[-1] + 1])


def class_distance(allowed: frozenset[str], ratio: float, a_load: float) -> float:
    """How far the measured low/high ratio lies outside the allowed classes, as a share
    of the organic-to-metal span at that attenuation (the classes' calibrated ratios
    converge on thin loads, and so does what can be told): past the midway point to
    the nearest class not allowed; negative inside."""
    r = class_curves(a_load)
    span = max(r["organic"] - r["metal"], 1e-4)
    ranks = sorted(ORDER.index(c) for c in allowed)
    lo, hi = ORDER[ranks[0]], ORDER[ranks[-1]]  # highest ratio, lowest ratio allowed
    upper = math.inf if lo == "organic" else (r[lo] + r[ORDER[ranks[0] - 1]]) / 2.0
    lower = -math.inf if hi == "metal" else (r[hi] + r[ORDER[ranks[-1] + 1]]) / 2.0
    return max(ratio - upper, lower - ratio) / span


def material_score(allowed: frozenset[str] | None, seen: _Seen) -> float:
    """How surely the load reads as none of the declared classes (0.5 at MATERIAL_MARGIN
    past the midway point); 0 when a line's class cannot be told or there is no dual
    energy."""
    if seen.ratio is None or allowed is None:
        return 0.0
    d = class_distance(allowed, seen.ratio, seen.a_load)
    return _logistic((d - MATERIAL_MARGIN) / MATERIAL_SCALE)


def foreign_share(allowed: frozenset[str] | None, seen: _Seen) -> float:
    """Share of the load whose stretch of the box reads (by MATERIAL_MARGIN) as a class
    no declared line allows."""
    if allowed is None:
        return 0.0
    return sum(
        share for r, a, share in seen.segments if class_distance(allowed, r, a) > MATERIAL_MARGIN
    )


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


def manifest_candidates(
    meta: ScanMetadata, found: Sequence[tuple[Container, Contents]]
) -> list[Candidate]:
    """Every check of the scan with its score, flagged or not (see the module)."""
    if not meta.manifest_declared or not found:
        return []
    per, loose = _lines_by_container(meta, len(found))
    out: list[Candidate] = []
    for k, ((container, seen), lines) in enumerate(zip(found, per, strict=True)):
        where = f"container {k + 1}"
        box = list(seen.load_box or container.box)
        if not lines and not loose:
            out.append(
                Candidate(
                    ManifestDiscrepancy(
                        kind="declared_empty_but_loaded",
                        score=round(seen.p_loaded, 3),
                        container=k,
                        box=box,
                        explanation=(
                            f"{where} declared empty; the image holds about "
                            f"{_kg(seen.mass_kg)} of {seen.kind} goods"
                        ),
                    ),
                    not seen.empty,
                )
            )
        elif lines:
            out += _compare(k, where, lines, _seen_of(seen), box, list(container.box))
    if loose:
        x0 = min(c.box[0] for c, _ in found)
        y0 = min(c.box[1] for c, _ in found)
        x1 = max(c.box[2] for c, _ in found)
        y1 = max(c.box[3] for c, _ in found)
        together = _seen_together([c for _, c in found])
        where = f"the {len(found)} containers together (no container named)"
        out += _compare(None, where, loose, together, [x0, y0, x1, y1], [x0, y0, x1, y1])
    return out


def manifest_evidence(candidates: Sequence[Candidate]) -> dict[str, float]:
    """Per discrepancy kind, the highest score any check gave (0: none ran)."""
    out = dict.fromkeys(KINDS, 0.0)
    for c in candidates:
        d = c.discrepancy
        out[d.kind] = max(out[d.kind], d.score)
    return out


def check_manifest(
    meta: ScanMetadata, found: Sequence[tuple[Container, Contents]]
) -> ManifestCheck:
    """The manifest check of one scan (see the module)."""
    return check_of(meta, found, manifest_candidates(meta, found))


def check_of(
    meta: ScanMetadata,
    found: Sequence[tuple[Container, Contents]],
    candidates: Sequence[Candidate],
) -> ManifestCheck:
    """The check as results carry it: the flagged candidates."""
    if not meta.manifest_declared:
        return ManifestCheck(status="no_manifest", discrepancies=[])
    if not found:
        return ManifestCheck(status="no_container", discrepancies=[])
    out = [c.discrepancy for c in candidates if c.flagged]
    return ManifestCheck(status="discrepancies" if out else "consistent", discrepancies=out)


def _compare(
    k: int | None,
    where: str,
    lines: Sequence[ManifestItem],
    seen: _Seen,
    box: list[int],
    container_box: list[int],
) -> list[Candidate]:
    """Emptiness, weight and material of one load against its declared lines."""
    declared = sum(line.declared_weight_kg or 0.0 for line in lines)
    goods = _goods(lines)
    said = f"{where}: declared {_kg(declared)} of {goods}"
    # Empty, or holding a small part of the declared weight (a few pallets, hidden goods).
    share = seen.mass_kg / declared if declared > 0 and not seen.empty else 1.0
    nearly = _logistic(math.log(NEARLY_EMPTY / max(share, 1e-6)) / 0.3)
    out = [
        Candidate(
            ManifestDiscrepancy(
                kind="declared_loaded_but_empty",
                score=round(max(1.0 - seen.p_loaded, nearly), 3),
                container=k,
                box=container_box,
                explanation=(
                    f"{said}; the image shows it empty"
                    if seen.empty
                    else f"{said}; the image holds only about {_kg(seen.mass_kg)}"
                ),
            ),
            seen.empty or share < NEARLY_EMPTY,
        )
    ]
    if seen.empty:
        return out
    holds = f"the image holds about {_kg(seen.mass_kg)} of {seen.kind} goods"
    allowed = allowed_classes(lines)
    if declared > 0:
        z = weight_z(seen.mass_kg / declared, seen.material)
        score = _weight_score(z)
        out.append(
            Candidate(
                ManifestDiscrepancy(
                    kind="weight_mismatch",
                    score=score,
                    container=k,
                    box=box,
                    explanation=f"{said}; {holds}",
                ),
                score > 0.5,
            )
        )
        foreign = foreign_share(allowed, seen)
        heavy = _logistic(2.0 * (z - WEIGHT_Z_HEAVY))
        score = round(min(heavy, _logistic((foreign - FOREIGN_SHARE) / 0.05)), 3)
        out.append(
            Candidate(
                ManifestDiscrepancy(
                    kind="undeclared_goods",
                    score=score,
                    container=k,
                    box=box,
                    explanation=(
                        f"{said}; {holds}, {foreign:.0%} of it of a material no declared "
                        f"line is ({_classes(allowed)} declared)"
                    ),
                ),
                score > 0.5,
            )
        )
    score = material_score(allowed, seen)
    declared_class = _classes(allowed)
    out.append(
        Candidate(
            ManifestDiscrepancy(
                kind="false_description",
                score=score,
                container=k,
                box=box,
                explanation=f"{said} ({declared_class}); {holds}",
            ),
            score > 0.5,
        )
    )
    return out
