"""The torch-free CargoScan runtime: scan decoding, pre-processing, the ONNX model engine,
results and renderings, and the scanner-facing HTTP service (``inference.service``)."""
