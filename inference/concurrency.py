"""Two independent pieces of work at once, for the two energy channels of a scan.

Why threads and not a pool: decoding (libpng, zlib, libtiff) and the numpy passes of the
pre-processing release the GIL, so a second thread uses the machine's second core; a
thread per call is fork-safe (training's data-loader workers call the same functions)
and costs ~0.1 ms, nothing beside a 20 ms channel.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

A = TypeVar("A")
B = TypeVar("B")

__all__ = ["both"]


def both(first: Callable[[], A], second: Callable[[], B]) -> tuple[A, B]:
    """``(first(), second())``, ``second`` on a thread of its own; an exception in either
    is raised here (``first``'s if both fail), after both have finished."""
    box: dict[str, B] = {}
    error: list[BaseException] = []

    def run() -> None:
        try:
            box["value"] = second()
        except BaseException as exc:  # handed to the caller below
            error.append(exc)

    thread = threading.Thread(target=run, name="cargoscan-channel", daemon=True)
    thread.start()
    try:
        a = first()
    finally:
        thread.join()
    if error:
        raise error[0]
    return a, box["value"]
