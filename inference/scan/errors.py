"""The one error type for bad scan input, shared by the metadata schema and the decoders."""

from __future__ import annotations


class ScanError(ValueError):
    """The one error type for bad scan input (image bytes, arrays or metadata)."""
