"""Benchmarks (speed as ratios to the naive baseline, measured in one run) and device planning."""
