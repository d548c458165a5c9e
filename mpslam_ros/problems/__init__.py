"""Least-squares problems on the shared optimiser: pose graphs (PGO) and bundle adjustment (BA)."""
