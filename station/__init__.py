"""The scanner-station side: a reference client that posts generated scans to the service
(`client`, `cargoscan simulate`) and the one-command demo of both (`demo`, `make demo`).

Not training: it needs only the numpy-only synthetic generator (`training.synth`) and the
runtime (`inference`), never torch, so `make demo` runs on the base install.
"""
