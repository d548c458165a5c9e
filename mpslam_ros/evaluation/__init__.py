"""Trajectory evaluation (ATE/RPE, evo-compatible) and plots."""
