"""Scans: the metadata schema a station sends, the decoded :class:`Scan` type, and the
decoders that turn station bytes (PNG, TIFF, JPEG) into validated arrays or a ScanError."""

from __future__ import annotations

from inference.scan.channels import DEFAULT_MAX_PIXELS, MIN_SIDE, PAD_MULTIPLE, ModelShape, Scan
from inference.scan.decode import decode_image, decode_scan, load_scan
from inference.scan.errors import ScanError, ScanTooLarge
from inference.scan.metadata import ManifestItem, ScanMetadata, ScannerInfo

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MIN_SIDE",
    "PAD_MULTIPLE",
    "ManifestItem",
    "ModelShape",
    "Scan",
    "ScanError",
    "ScanMetadata",
    "ScanTooLarge",
    "ScannerInfo",
    "decode_image",
    "decode_scan",
    "load_scan",
]
