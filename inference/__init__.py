"""The torch-free CargoScan runtime: scan decoding, pre-processing, the ONNX model engine,
results and renderings, and the scanner-facing HTTP service (``inference.service``)."""

from pathlib import Path

# The shipped model, found from the installed source tree rather than the working
# directory, so `cargoscan analyze` and `serve` work from any folder.
DEFAULT_MODEL = Path(__file__).resolve().parent.parent / "models" / "cargoscan-default.onnx"
