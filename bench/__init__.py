"""Benchmarks that double as acceptance checks; each prints ratios against a peer run alongside."""
