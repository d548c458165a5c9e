"""Lie groups (SO(3), SE(3), SE(2)) and camera models; fp64 state, numba-jitted where hot."""
