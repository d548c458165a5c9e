"""Precision presets, mixed-precision kernels, linear solvers (CGNR, preconditioners) and the
Levenberg-Marquardt optimiser shared by pose-graph optimisation and bundle adjustment."""
