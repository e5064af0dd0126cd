"""The runtime's typed contracts: the model card it reads and the scan result it writes.

Both travelled as plain dicts read by string keys in a dozen places, so a card with a
misspelt or mistyped key failed far from where it was read, or not at all. Here they are
pydantic models (torch-free, no web framework):

- :class:`ModelCard` is validated where a card is read (``Engine.load``, a site's
  operating point, the training commands that rewrite a card) and gives one error naming
  each bad field. Only what code reads is typed; the free-form parts (metrics, the
  training record, calibration notes) stay ``dict[str, Any]`` and unknown keys are kept
  (``extra="allow"``), so old and new cards load and a card read and written again loses
  nothing (:meth:`ModelCard.to_dict`).
- :class:`ScanResult` is what ``inference.result.build_result`` makes, stations receive
  and the service stores and signs (docs/design.md, "The result: what goes out"). The
  service's OpenAPI document describes its scan routes with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

__all__ = [
    "CardError",
    "CargoContainer",
    "CargoReport",
    "InputSpec",
    "ManifestCheck",
    "ManifestDiscrepancy",
    "ModelCard",
    "NetworkConfig",
    "OnnxSpec",
    "OutputSpec",
    "ResultFinding",
    "ResultModel",
    "RiskReason",
    "ScanResult",
    "Score",
    "ScoreTable",
    "VerdictRules",
    "card_text",
]

Score = Annotated[float, Strict(), Field(ge=0, allow_inf_nan=False)]
"""A threshold or level on a model's scores: a finite number >= 0 (0 is a real threshold:
no clean validation scan scored there; one above 1 never fires). Strict, so a quoted
number in a card is refused rather than read as a number by luck."""
ScoreTable = dict[str, Score]
"""Category -> threshold. A category missing from a table falls back (see inference.result)."""


class CardError(ValueError):
    """A model card that does not hold what the runtime reads; the message names each bad
    field (the engine raises it as a ModelError)."""


class _CardPart(BaseModel):
    """Open to keys it does not name: a card keeps what newer (or older) writers put in."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, populate_by_name=True)


class OnnxSpec(_CardPart):
    """The ONNX file the card belongs to; ``sha256`` ties thresholds to those bytes."""

    file: str | None = None
    sha256: str | None = None
    opset: int | None = None


class InputSpec(_CardPart):
    """What the network takes: checked against this runtime's pre-processing."""

    name: str | None = None
    shape: list[int | str] | None = None
    multiple_of: int = Field(32, gt=0)
    channels: list[str] | None = None
    attenuation_scale: float | None = None
    preprocess_version: str | None = None


class OutputSpec(_CardPart):
    """The network's outputs: ``stride`` maps heat-map cells back to model pixels."""

    stride: int = Field(4, gt=0)
    heat: str | None = None
    box: str | None = None
    anomaly: str | None = None


class VerdictRules(_CardPart):
    """The verdict rules in words, for people reading the card (code applies them)."""

    alarm: str | None = None
    review: str | None = None
    clear: str | None = None


class NetworkConfig(_CardPart):
    """The network's configuration (``training.model.ModelConfig``): enough to rebuild it
    from the card, as ``cargoscan train --init MODEL.onnx`` does."""

    categories: list[str]
    in_channels: int
    widths: list[int]
    blocks: list[int]
    neck_width: int
    extra: dict[str, Any] = Field(default_factory=dict)


class ModelCard(_CardPart):
    """A model's card (``NAME.json`` beside ``NAME.onnx``, docs/design.md "The model
    card"), or that card with a site's operating point laid over it."""

    card_version: str | None = None
    name: str | None = None
    created: str | None = None
    onnx: OnnxSpec = Field(default_factory=OnnxSpec)
    categories: list[str]
    input: InputSpec = Field(default_factory=InputSpec)
    outputs: OutputSpec = Field(default_factory=OutputSpec)
    # The operating point: None (or absent) is an uncalibrated model.
    thresholds: ScoreTable | None = None
    thresholds_8bit: ScoreTable | None = None
    review_thresholds: ScoreTable | None = None
    review_thresholds_8bit: ScoreTable | None = None
    anomaly_level: Score | None = None
    anomaly_level_8bit: Score | None = None
    calibration: dict[str, Any] | None = None
    # The second stage (inference.verifier): its ONNX file beside the model, sha256, the
    # detector score from which candidates are verified and the bit depths it applies to.
    verifier: dict[str, Any] | None = None
    verdict: VerdictRules | None = None
    metrics: dict[str, Any] | None = None
    training: dict[str, Any] | None = None
    # "model_config" is pydantic's own attribute name, so the field goes by another.
    network: NetworkConfig | None = Field(None, alias="model_config")
    parity_max_abs_diff: float | None = None
    # Set by inference.operating_point.apply, never written into a card file.
    operating_point_site: str | None = None

    @classmethod
    def of(cls, card: ModelCard | Mapping[str, Any], where: str | None = None) -> ModelCard:
        """``card`` as a ModelCard: a dict (a card read from its file, or one about to be
        written) is validated; raises CardError naming ``where`` (its file) and each bad
        field."""
        if isinstance(card, ModelCard):
            return card
        try:
            return cls.model_validate(card)
        except ValidationError as exc:
            prefix = f"{where}: " if where else ""
            raise CardError(f"{prefix}not a valid model card: {_fields(exc)}") from None

    def to_dict(self) -> dict[str, Any]:
        """The card as a dict for its file: every key it was read with (unknown ones
        included), none added; typed fields first."""
        return self.model_dump(by_alias=True, exclude_unset=True)


def card_text(card: Mapping[str, Any], where: str) -> str:
    """A card dict as its file's text (indented JSON, no NaN), once it validates: the
    training commands write cards as dicts, and none may write one the runtime refuses."""
    ModelCard.of(card, where)
    return json.dumps(card, indent=2, allow_nan=False) + "\n"


def _fields(exc: ValidationError) -> str:
    """Each error as ``field.path: message`` (``model_config``, not ``network``)."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "the card"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


# --------------------------------------------------------------------------- the result


class ResultModel(BaseModel):
    """Which model decided: results of different models for one scan are kept apart."""

    name: str
    version: str = Field(description="NAME@ and the first 12 hex digits of the ONNX sha256")
    sha256: str = Field(description="the ONNX file's sha256")
    operating_point: str | None = Field(
        None, description="the site whose operating point was laid over the card (absent: none)"
    )
    verifier_sha256: str | None = Field(
        None,
        description="the sha256 of the second-stage verifier the card names, which scored "
        "this scan's findings where it applies (absent: the model has none)",
    )


class ResultFinding(BaseModel):
    """One region of the scan worth an officer's look, with why."""

    id: int = Field(ge=1, description="1, 2, ... in falling order of level")
    category: str = Field(description="a category of the model's card, or 'anomaly'")
    score: float = Field(ge=0, le=1, allow_inf_nan=False)
    box: list[float] = Field(
        min_length=4, max_length=4, description="x0, y0, x1, y1 in the original scan's pixels"
    )
    polygon: list[list[float]] | None = Field(description="not produced yet: always null")
    source: Literal["detector", "anomaly"]
    alarm: bool = Field(description="the score is above its category's alarm threshold")
    explanation: str = Field(description="which threshold decided, from which table")


class CargoContainer(BaseModel):
    """One container (trailer bed, tank) and what the image shows in it (docs/cargo.md)."""

    box: list[int] = Field(min_length=4, max_length=4, description="x0, y0, x1, y1 scan pixels")
    empty: bool
    score: float = Field(ge=0, le=1, description="how sure the empty/loaded call is (0.5..1)")
    mass_kg: float = Field(ge=0, description="estimated mass of the load, kg")
    fill: float = Field(ge=0, le=1, description="share of the box's inside the load covers")
    kind: str = Field(description="material and packing in words, or 'empty'")
    material: Literal["organic", "mixed", "metal", "unknown"]
    packing: Literal["bulk", "packaged", "liquid", "none"]
    tank: bool
    load_box: list[int] | None = Field(description="where the load is (null when empty)")


class ManifestDiscrepancy(BaseModel):
    """One way the scan disagrees with its declared manifest."""

    kind: Literal[
        "declared_empty_but_loaded",
        "declared_loaded_but_empty",
        "undeclared_goods",
        "false_description",
        "weight_mismatch",
    ]
    score: float = Field(ge=0, le=1)
    container: int | None = Field(description="index of cargo.containers (null: the whole load)")
    box: list[int] = Field(min_length=4, max_length=4, description="where it applies")
    explanation: str


class ManifestCheck(BaseModel):
    """Declared against observed; nothing is checked without a manifest or a container."""

    status: Literal["no_manifest", "no_container", "consistent", "discrepancies"]
    discrepancies: list[ManifestDiscrepancy]


class CargoReport(BaseModel):
    """The containers of a scan, their contents and the manifest check."""

    containers: list[CargoContainer]
    manifest_check: ManifestCheck
    processing_ms: float = Field(ge=0, description="time the cargo analysis took")


class RiskReason(BaseModel):
    """One reason behind a scan's risk and verdict, shown with its weight (docs/cargo.md,
    "Risk and review"). Contributions are on the risk's level scale: above 0.5 a reason
    asks for review, above 1 it alarms; the scan's risk is ``1 - 2**-r`` with ``r`` the
    largest contribution (the reason with ``decides``)."""

    source: Literal["finding", "manifest"]
    ref: int | None = Field(
        description="the finding's id, or the index in cargo.manifest_check.discrepancies "
        "(null: the strongest finding under its review threshold, not shown)"
    )
    kind: str = Field(description="the finding's category, or the discrepancy's kind")
    score: float = Field(ge=0, le=1, allow_inf_nan=False)
    weight: float | None = Field(
        description="the discrepancy kind's weight (inference.risk.DISCREPANCY_WEIGHTS); "
        "null for a finding, whose thresholds set its contribution"
    )
    contribution: float = Field(
        ge=0, allow_inf_nan=False, description="0.5: review, 1: alarm (weight x score)"
    )
    decides: bool = Field(description="the largest contribution: it sets the risk")
    explanation: str


class ScanResult(BaseModel):
    """The result of one scan's analysis by one model (docs/design.md, "The result")."""

    scan_id: str
    model: ResultModel
    processing_ms: float = Field(ge=0, allow_inf_nan=False)
    risk: float = Field(
        ge=0,
        le=1,
        allow_inf_nan=False,
        description="above 0.5: alarm; above 1 - 2**-0.5 (about 0.29): review",
    )
    verdict: Literal["clear", "review", "alarm"]
    findings: list[ResultFinding]
    cargo_region: list[float] | None = Field(description="not produced yet: always null")
    anomaly_map: str | None = Field(description="where the anomaly map is (a URL or file name)")
    cargo: CargoReport | None = Field(
        None, description="containers, contents and the manifest check (absent: not analysed)"
    )
    risk_reasons: list[RiskReason] | None = Field(
        None,
        description="what the risk and verdict rest on, strongest first: the findings and "
        "the manifest discrepancies with their weights (absent: cargo not analysed)",
    )

    def to_dict(self) -> dict[str, Any]:
        """The result as stations receive it and the service stores and signs it: every
        field in declared order, ``model.operating_point`` only where a site set one."""
        return self.model_dump(exclude_unset=True)
