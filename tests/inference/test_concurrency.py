"""Both channels at once: results in order, errors raised in the caller, high's first."""

from __future__ import annotations

import threading

import pytest

from inference.concurrency import both
from inference.scan import ScanError, decode_scan
from tests.inference.service.service_helpers import scan_pngs


def test_both_returns_in_order_and_runs_the_second_on_another_thread():
    main = threading.get_ident()
    a, b = both(lambda: threading.get_ident(), lambda: threading.get_ident())
    assert a == main and b != main


def test_an_error_in_either_is_raised_after_both_finished():
    done: list[str] = []

    def slow() -> None:
        done.append("second")

    def fail() -> None:
        raise ValueError("first")

    with pytest.raises(ValueError, match="first"):
        both(fail, slow)
    assert done == ["second"]
    with pytest.raises(KeyError):
        both(lambda: 1, lambda: {}["x"])


def test_parallel_decoding_reports_the_bad_channel():
    files = scan_pngs(h=64, w=128)
    high, low = files["high"][1], files["low"][1]
    scan = decode_scan(high, low)
    assert scan.has_low and scan.shape == (64, 128)
    with pytest.raises(ScanError, match=r"^low: "):
        decode_scan(high, low[: len(low) // 2])
    with pytest.raises(ScanError, match=r"^high: "):  # both bad: high's error, as before
        decode_scan(high[:100], low[:100])
