"""Physics-based synthetic dual-energy cargo X-ray scans with exact labels (numpy only)."""
