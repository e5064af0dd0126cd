"""CargoScan runtime: scan decoding, pre-processing, rendering (torch-free)."""
