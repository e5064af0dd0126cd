"""The runtime engine: an ONNX model and its card turn a scan into findings (torch-free).

One ONNX Runtime session per model. A whole scan goes through
`inference.preprocess` (the same function training used) and the network in
one pass; the exported graph already keeps only local peaks of the heat map,
so decoding is a top-k over the peaks and a look-up of the box sides there.
Boxes come back in the original scan's pixels.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inference.boxes import iou_matrix
from inference.cargo import analyze_cargo
from inference.contracts import CardError, CargoReport, ModelCard
from inference.preprocess import COMPATIBLE_VERSIONS, PREPROCESS_VERSION, ModelInput, preprocess
from inference.scan import Scan
from inference.verifier import Verifier, VerifierSpec

MIN_SCORE = 0.05
MAX_FINDINGS = 100
# Two peaks of one category whose boxes overlap this much are one object seen twice
# (a person or a long rifle can raise two local maxima); the weaker goes.
NMS_IOU = 0.5


class ModelError(RuntimeError):
    """The model or its card cannot be used (missing, corrupt, wrong pre-processing)."""


@dataclass
class Finding:
    category: str
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in original scan pixels


@dataclass
class Analysis:
    findings: list[Finding]
    anomaly: np.ndarray  # (H/stride, W/stride) probabilities, model pixels
    model_hw: tuple[int, int]
    # Maps model pixels back to the scan's (anomaly regions -> original pixels).
    model_input: ModelInput | None = None
    # The scan's bit depth: 8-bit exports have thresholds of their own in the card.
    bit_depth: int = 16
    # The station's pixel pitch (mm), None when it sent none: sets the smallest finding.
    pixel_pitch_mm: float | None = None
    # Containers, contents and the manifest check (inference.cargo); None: not analysed.
    cargo: CargoReport | None = None


class Engine:
    """A loaded model: `Engine.load("models/NAME.onnx")`, then `engine.analyze(scan)`."""

    def __init__(self, session: Any, card: ModelCard | Mapping[str, Any], threads: int) -> None:
        try:
            self.card = ModelCard.of(card)
        except CardError as exc:
            raise ModelError(str(exc)) from None
        self.session = session
        self.categories: list[str] = list(self.card.categories)
        self.stride = self.card.outputs.stride
        self.threads = threads
        self.verifier: Verifier | None = None  # the card's second stage, set by load()

    @classmethod
    def load(
        cls,
        model: Path | str,
        threads: int = 2,
        operating_point: Path | str | None = None,
        *,
        verifier: bool = True,
    ) -> Engine:
        """Load ``model`` (``.onnx`` beside its ``.json`` card), checked against its card;
        a site's ``operating_point`` file, when given, replaces the card's thresholds.
        ``verifier=False`` leaves the card's second stage out (the detector alone, as
        `cargoscan verifier` mines it)."""
        from inference import operating_point as site_op

        model = Path(model)
        card_path = model.with_suffix(".json")
        try:
            card = ModelCard.of(json.loads(card_path.read_text()), str(card_path))
            data = model.read_bytes()
        except FileNotFoundError as exc:
            raise ModelError(
                f"missing {exc.filename}: a model needs its .onnx and .json card"
            ) from None
        except json.JSONDecodeError as exc:
            raise ModelError(f"{card_path}: not valid JSON ({exc})") from None
        except CardError as exc:
            raise ModelError(str(exc)) from None
        digest = hashlib.sha256(data).hexdigest()
        if card.onnx.sha256 != digest:
            raise ModelError(f"{model}: sha256 {digest[:12]}... does not match its card")
        version = card.input.preprocess_version
        if version not in COMPATIBLE_VERSIONS:
            raise ModelError(
                f"{model}: trained with pre-processing v{version}, this runtime has "
                f"v{PREPROCESS_VERSION} and serves models of v{', v'.join(COMPATIBLE_VERSIONS)}"
            )
        if operating_point is not None:
            try:
                card = site_op.apply(card, site_op.load(operating_point, card))
            except (site_op.OperatingPointError, CardError) as exc:
                raise ModelError(str(exc)) from None
        engine = cls.from_bytes(data, card, threads)
        if verifier and card.verifier is not None:
            engine.verifier = _load_verifier(model, card, threads)
        return engine

    @classmethod
    def from_bytes(
        cls, data: bytes, card: ModelCard | Mapping[str, Any], threads: int = 2
    ) -> Engine:
        """An engine on an ONNX graph and its card, not checked against each other (`load`
        checks them; the card is still validated): for `export`, which calibrates the file
        it has just written."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        return cls(session, card, threads)

    def analyze(
        self,
        scan: Scan,
        min_score: float = MIN_SCORE,
        *,
        cargo: bool = False,
        before_model: Callable[[], object] | None = None,
        after_model: Callable[[np.ndarray], object] | None = None,
    ) -> Analysis:
        """Findings above `min_score` (not yet thresholded: the card's thresholds decide
        alarms); with `cargo`, also containers, contents and the manifest check, on the
        attenuation the model saw (a few ms). The cargo analysis is experimental and off
        by default: on real 8-bit scans it does not yet tell empty from loaded reliably
        (docs/cargo.md), and a result must not state what the product cannot back.

        ``before_model`` runs between the pre-processing and the network, ``after_model``
        gets the anomaly map (:func:`anomaly_cells`) as soon as the network is done: the
        service waits there for its blob writes, so that the network's two threads have
        the cores to themselves, and encodes the map beside the decoding."""
        model_input = preprocess(scan)
        if before_model is not None:
            before_model()
        outputs = self.run(model_input)
        if after_model is not None:
            after_model(anomaly_cells(outputs[2][0, 0], model_input, self.stride))
        analysis = self.decode(scan, model_input, outputs, min_score)
        if cargo:
            analysis.cargo = analyze_cargo(scan, model_input)
        return analysis

    def run(self, model_input: ModelInput) -> list[np.ndarray]:
        """The network alone on a pre-processed input: heat, box sides, anomaly map."""
        return self.session.run(None, {"input": model_input.tensor})

    def decode(
        self,
        scan: Scan,
        model_input: ModelInput,
        outputs: list[np.ndarray],
        min_score: float = MIN_SCORE,
    ) -> Analysis:
        """The network's outputs -> findings in scan pixels (a top-k over the peaks the
        graph kept, their boxes, duplicates suppressed); apart so a benchmark can time it."""
        heat, box, anomaly = outputs
        flat = heat[0].reshape(-1)
        # The peaks at or above min_score (a few dozen of ~700,000 cells), then the best
        # MAX_FINDINGS of them, falling scores (equal ones by position): one comparison
        # pass, where a top-k over the whole map negated and partitioned it (3 ms).
        top = np.flatnonzero(flat >= min_score)
        if top.size > MAX_FINDINGS:
            top = top[np.argpartition(-flat[top], MAX_FINDINGS - 1)[:MAX_FINDINGS]]
            top.sort()
        top = top[np.argsort(-flat[top], kind="stable")]
        _, h, w = heat[0].shape
        c, rest = np.divmod(top, h * w)
        y, x = np.divmod(rest, w)
        left, up, right, down = box[0][:, y, x]
        # All candidates at once, in the network's float32 as one at a time would be.
        px = ((x + 0.5) * self.stride).astype(box.dtype)
        py = ((y + 0.5) * self.stride).astype(box.dtype)
        model_boxes = np.stack([px - left, py - up, px + right, py + down], axis=1)
        original = model_input.to_original(model_boxes)
        findings = [
            Finding(self.categories[int(ci)], float(flat[i]), tuple(map(float, b)))
            for ci, i, b in zip(c, top, original, strict=True)
        ]
        findings = suppress_duplicates(findings)
        if self.verifier is not None and self.verifier.applies(scan.bit_depth):
            findings = self._verified(findings, model_input, min_score)
        return Analysis(
            findings,
            anomaly[0, 0],
            model_input.tensor.shape[-2:],
            model_input,
            bit_depth=int(scan.bit_depth),
            pixel_pitch_mm=scan.metadata.pixel_pitch_mm,
        )

    def _verified(
        self, findings: list[Finding], model_input: ModelInput, min_score: float
    ) -> list[Finding]:
        """The second stage (:mod:`inference.verifier`): candidates from the card's floor
        up take the verifier's probability as their score, falling scores again; the
        others, and those it scores under ``min_score``, are dropped."""
        if not findings or self.verifier is None:  # nothing to look at again
            return findings
        boxes = np.array([f.box for f in findings], np.float64)
        kept, scores = self.verifier.rescore(
            model_input.tensor,
            model_input.scaled_hw,
            model_input.to_model(boxes),
            boxes,
            [f.score for f in findings],
            [self.categories.index(f.category) for f in findings],
        )
        verified = [
            Finding(findings[i].category, float(s), findings[i].box)
            for i, s in zip(kept, scores, strict=True)
            if s >= min_score
        ]
        return sorted(verified, key=lambda f: -f.score)


def _load_verifier(model: Path, card: ModelCard, threads: int) -> Verifier:
    """The verifier the card names, beside the model file (checked against its sha256)."""
    try:
        spec = VerifierSpec.of(card.verifier or {})
        return Verifier.load(model.parent / spec.file, spec, len(card.categories), threads)
    except FileNotFoundError as exc:
        raise ModelError(f"missing {exc.filename}: the card names a verifier") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{model}: the card's verifier cannot be used: {exc}") from None


def anomaly_cells(anomaly: np.ndarray, model_input: ModelInput | None, stride: int) -> np.ndarray:
    """The anomaly map (float32) without the cells that lie wholly in the padding: padding
    is air the network was shown to fill the stride multiple, and what it says there is
    about nothing in the scan."""
    amap = np.asarray(anomaly, dtype=np.float32)
    if model_input is None or amap.ndim != 2:
        return amap
    sh, sw = model_input.scaled_hw
    return amap[: -(-sh // stride), : -(-sw // stride)]


def suppress_duplicates(findings: list[Finding], iou: float = NMS_IOU) -> list[Finding]:
    """Greedy per-category non-maximum suppression; `findings` sorted by falling score.
    One IoU matrix for all, then the greedy pass over its rows."""
    if len(findings) < 2:
        return list(findings)
    overlaps = iou_matrix([f.box for f in findings], [f.box for f in findings]) > iou
    categories = np.array([f.category for f in findings])
    same = categories[:, None] == categories[None, :]
    suppressed = np.zeros(len(findings), dtype=bool)
    kept: list[Finding] = []
    for n, f in enumerate(findings):
        if suppressed[n]:
            continue
        kept.append(f)
        suppressed |= overlaps[n] & same[n]
    return kept
