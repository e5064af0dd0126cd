"""CargoScan training side: synthetic data generation and (later) model training."""
