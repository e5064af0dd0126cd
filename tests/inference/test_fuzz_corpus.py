"""Hostile scan files replayed as ordinary tests: the fuzzer's finds (``tests/fuzz_corpus/``,
kept by ``make fuzz``) and the hand-made cases of ``fuzz/cases.py``.

Each must end in ScanError (or decode, for the few that are valid scans), within the time
and memory limits, through the same entry point the fuzzer drives (decode, then
pre-process). A new find fails here until the decoder is fixed.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fuzz.cases import hostile_cases, valid_seeds
from fuzz.fuzz_decode import CORPUS, peak_rss_mb, reset_peak_rss, run_one
from inference.scan import DEFAULT_MAX_PIXELS, ScanError, decode_image

TIME_LIMIT_S = 2.0
"""Per case; every case runs in milliseconds (this allows for a loaded machine)."""
MEMORY_LIMIT_MB = 256
"""Growth of peak memory per case; the cases decode to 1 Mpx at most."""
DECODES = {"png_palette", "jpeg_corrupt_scan"}
"""Hand-made cases that decode: a palette PNG of one grey (no PLTE: PIL's default
palette), and a JPEG whose entropy data was overwritten (libjpeg only warns, as every
JPEG reader does; the picture is damaged but a picture)."""

CASES = hostile_cases()
CORPUS_FILES = sorted(p for p in CORPUS.iterdir() if p.is_file() and p.suffix != ".md")


def _replay(data: bytes, max_pixels: int) -> tuple[str, float, float | None]:
    """Outcome, seconds and peak memory growth (MB; None where it cannot be measured)."""
    measured = reset_peak_rss()
    before = peak_rss_mb()
    start = time.perf_counter()
    outcome = run_one(data, max_pixels)  # anything but ScanError fails the test
    took = time.perf_counter() - start
    return outcome, took, (peak_rss_mb() - before) if measured else None


def _within_limits(name: str, took: float, grew: float | None) -> None:
    assert took < TIME_LIMIT_S, f"{name}: {took:.2f} s"
    assert grew is None or grew < MEMORY_LIMIT_MB, f"{name}: peak memory +{grew:.0f} MB"


@pytest.mark.parametrize("path", CORPUS_FILES, ids=[p.name for p in CORPUS_FILES])
def test_corpus_file_is_refused_or_decoded_within_limits(path: Path) -> None:
    outcome, took, grew = _replay(path.read_bytes(), 1 << 20)
    _within_limits(path.name, took, grew)
    if path.name.startswith("seed_"):
        assert outcome == "ok", f"{path.name}: a valid seed was refused: {outcome}"


@pytest.mark.parametrize("name", sorted(CASES))
def test_hand_made_hostile_case(name: str) -> None:
    # The service's own pixel limit: the header checks must refuse before decoding.
    outcome, took, grew = _replay(CASES[name], DEFAULT_MAX_PIXELS)
    _within_limits(name, took, grew)
    if name in DECODES:
        assert outcome == "ok", outcome
    else:
        assert outcome.startswith("rejected: "), f"{name} was accepted as a scan"


def test_valid_seeds_decode() -> None:
    for name, data in valid_seeds().items():
        assert run_one(data) == "ok", name


def test_rejections_say_what_is_wrong() -> None:
    """A few cases whose message matters to a station's integrator."""
    expect = {
        "zip_posted_as_png": "ZIP files are not accepted",
        "png_huge_declared": "too many pixels",
        "png_1x1000000": "at least 16x16",
        "png_zero_size": "0x0",
        "png_truncated_half": "truncated",
        "png_chunk_length_lie": "runs past the end",
        "tiff_truncated_half": "truncated",
        "tiff_huge_declared": "too many pixels",
        "tiff_bad_compression": "compression 60000",
        "tiff_ifd_chain_200000": "multi-page",
        "jpeg_bad_marker": "bad marker",
        "jpeg_scan_bomb": "scans",
        "jpeg_fill_bytes": "segments",
        "tiff_2_samples": "single-channel",
    }
    for name, words in expect.items():
        with pytest.raises(ScanError, match=words):
            decode_image(CASES[name], max_pixels=DEFAULT_MAX_PIXELS)
