"""The one error type for bad scan input, shared by the metadata schema and the decoders."""

from __future__ import annotations


class ScanError(ValueError):
    """The one error type for bad scan input (image bytes, arrays or metadata)."""


class ScanTooLarge(ScanError):
    """Bad scan input that is too big to take (pixels, sides, a decoder's limit): 413, not
    422, so a station knows to send less rather than something else."""
