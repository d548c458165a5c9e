"""Levenberg-Marquardt (Gauss-Newton as a special case) over :class:`~mpslam_ros.solvers.problem.LeastSquaresProblem`.

In the spirit of Ceres: one :class:`SolverOptions`, one :class:`SolverSummary` per :func:`solve`.

Each iteration:

1. evaluate whitened residuals and Jacobian blocks (fp64, from the problem), apply the robust loss
   (IRLS weights ``sqrt(rho'(|r|^2))``);
2. scale: Jacobi column scaling ``S`` (columns of unit norm, computed at the first iteration) and a
   power-of-two global scale ``g`` keeping the largest entry at most 2^8, then cast each stage to
   the preset's format (:mod:`mpslam_ros.solvers.precision`);
3. solve ``(Js^T Js + g^2 lambda I) y = -Js^T (g r)`` with preconditioned CGNR (inexact Newton:
   stop at ``cg_tolerance`` relative residual) or the fp64 sparse direct baseline; ``delta = S y``;
4. retract in fp64, accept or reject with the gain ratio (actual / predicted cost reduction) and
   update the trust region radius ``1/lambda`` as Ceres does.

A low-precision step that produces inf/NaN is redone in fp32 (``fp16_fallbacks`` in the summary)
unless the preset disables it (the naive fp16 preset, to show the failure).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Union

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from mpslam_ros.solvers import kernels as K
from mpslam_ros.solvers.block_ldl import block_ldl_direct_solve, block_ldl_numeric, block_symbolic, finite_max_abs
from mpslam_ros.solvers.cuda import DEVICES, resolve_device
from mpslam_ros.solvers.precision import (
    PrecisionPreset,
    arithmetic_dtype,
    get_preset,
    power_of_two_scale,
    round_to,
    to_storage,
)
from mpslam_ros.solvers.geodesic import acceleration_kept, residual_second_derivative
from mpslam_ros.solvers.problem import LeastSquaresProblem, check_problem, robust_mask

LINEAR_SOLVERS = ("cgnr", "cholesky")
_FP64 = get_preset("fp64")
PRECONDITIONERS = ("none", "block_jacobi", "ic0", "ict")
ROBUST_LOSSES = (None, "huber", "cauchy")


@dataclass
class SolverOptions:
    """Everything :func:`solve` can be told (defaults suit pose graphs and BA windows)."""

    #: "fp64" | "fp32" | "fp16" | "mixed" or a :class:`PrecisionPreset`.
    precision: Union[str, PrecisionPreset] = "mixed"
    #: "lm" (Levenberg-Marquardt) or "gn" (Gauss-Newton: no damping, stop when a step fails).
    algorithm: str = "lm"
    max_iterations: int = 100
    #: Stop when an accepted step changes the cost by less than this fraction.
    function_tolerance: float = 1e-6
    #: ... and the decrease the linear model predicted for that step is below ``model_agreement_factor`` times
    #: this (relative): a small actual decrease with a much larger predicted one is a crawl, not a minimum.
    model_agreement_factor: float = 1.0
    #: Stop when the largest gradient entry (unscaled) is below this.
    gradient_tolerance: float = 1e-10
    #: Stop when |delta| <= parameter_tolerance * (sqrt(n) + parameter_tolerance).
    parameter_tolerance: float = 1e-9
    #: "cgnr" (matrix-free, mixed precision) or "cholesky" (fp64 sparse direct baseline).
    linear_solver: str = "cgnr"
    #: "none" | "block_jacobi" | "ic0" (static IC(0) on the J^T J pattern, natural order) |
    #: "ict" (static threshold-dropped Cholesky in minimum-degree order). Both built once per solve.
    preconditioner: str = "ict"
    #: ict: drop factor entries with |L_ij| < tol * sqrt(L_ii L_jj) (unit-diagonal scaled system); with 0
    #: the factor is complete at the first linearisation and "incomplete" only through its fp16 storage and
    #: through going stale as the linearisation moves (it is not rebuilt).
    ict_drop_tolerance: float = 0.0
    #: Inexact Newton forcing term: CG stops at |r| <= cg_tolerance * |rhs|.
    cg_tolerance: float = 1e-2
    #: CG tolerance while LM is far from a minimum: used for the first step and after any step that
    #: lowered the cost by more than ``far_phase_decrease`` (relative). None: ``cg_tolerance`` always
    #: (pose graphs: 1e-6). Why: far from a minimum the loose inexact-Newton step takes LM along another
    #: path than the direct solver's, and on non-convex graphs that path can end in another local minimum
    #: (generated 1,500-pose 2-D graph from its odometry guess: mixed ended 2.9 % above fp64 LM with
    #: 1e-2 and 1e-4, on fp64 LM's optimum with 1e-6); near the minimum the loose tolerance is harmless.
    cg_tolerance_far: Optional[float] = None
    far_phase_decrease: float = 1e-2
    #: CG also requires its last update to be below this fraction of the step (``|alpha p| <= tol |x|``,
    #: at least 2 iterations); None/0: off (BA). Pose graphs use 0.05 (:func:`~mpslam_ros.problems.pgo.pgo_options`):
    #: the residual test alone accepted steps 8x too long along the near-null modes of a 5,000-pose chain.
    cg_step_tolerance: Optional[float] = None
    cg_max_iterations: int = 300
    #: Problem-specific CG loop used instead of :func:`kernels.cgnr` when the preconditioner is block-Jacobi
    #: (or none) and the arithmetic is not emulated fp16; signature of
    #: :func:`mpslam_ros.solvers.cgnr_ba.cgnr_ba` (no ``cg_step_tolerance`` test). None: the shared kernel
    #: (bundle adjustment sets its fused one in :func:`~mpslam_ros.problems.ba.ba_options`).
    cgnr_kernel: Optional[Callable] = None
    #: Initial diagonal shift of the IC(0) factor (relative to the unit diagonal); x10 on breakdown.
    #: None: 1e-8. Pose graphs with an fp64-stored factor: 0 (:func:`~mpslam_ros.problems.pgo.pgo_options`):
    #: their factor is of the damped matrix ``J^T J + lambda I``, positive definite for lambda > 0, and a
    #: shift far above lambda makes it a poor preconditioner for the soft modes once lambda is small
    #: (generated 30,000-pose SE(3) graph, seed 2, fp64: lambda ~1e-12, CG iterations 263 with 1e-8). A
    #: breakdown still raises the shift (to at least 1e-8, counted in ``ic_breakdowns``).
    ic_shift: Optional[float] = None
    #: The IC/ict factor is static (built once per solve) but rebuilt at the current linearisation when a
    #: CG solve needs more than this many iterations *and* took longer than building the factor did
    #: (0: never rebuild). Never rebuilding, an odometry-initialised 5,000-pose graph took 100 LM
    #: iterations (30k CG iterations); with rebuilds, 12. None: 30 (pose graphs: 10, where one build costs
    #: 3-7 CG iterations from 1,000 to 10,000 SE(3) poses: with 30, a stale factor on a generated
    #: 10,000-pose SE(3) graph took 257 CG iterations in 11 LM iterations, with 10, 177 and a third less CG time).
    ic_rebuild_cg_iterations: Optional[int] = None
    #: With a factor built at an earlier linearisation, CG gets a budget of about one factor build's time
    #: (at least ``ic_rebuild_cg_iterations``); if it does not converge within it, the factor is rebuilt at
    #: once and CG rerun, instead of spending up to ``cg_max_iterations`` on a stale factor. None: off
    #: (pose graphs turn it on in :func:`~mpslam_ros.problems.pgo.pgo_options`).
    ic_stale_cg_budget: Optional[bool] = None
    #: The ic0/ict factor is of the *damped* matrix ``J^T J + lambda I`` (lambda at the build), and is
    #: rebuilt when LM's lambda has since moved by more than this factor either way (lambdas below
    #: ``ic_shift`` count as ``ic_shift``). Why: with the linearisation unchanged, the preconditioned
    #: operator ``(A + lambda_b I)^-1 (A + lambda I)`` has its eigenvalues between 1 and
    #: ``lambda / lambda_b``, so this ratio bounds CG's condition number. A factor of the undamped
    #: ``J^T J`` gives ``1 + lambda / sigma_min`` instead: on an 800-pose odometry-quality 2-D graph LM's
    #: radius fell to 0.05 and every CG solve hit ``cg_max_iterations`` (28k CG iterations, 100 LM
    #: iterations, 2.5x the direct solver's cost). 0: off (the factor ignores lambda, as before).
    ic_damping_ratio: float = 10.0
    #: When CG ends unconverged (``cg_max_iterations`` at a relative residual above ``cg_tolerance``)
    #: even with a factor built for this linearisation and lambda, solve this step with the fp64 sparse
    #: direct solver instead (counted in ``SolverSummary.direct_fallbacks``).
    #: None: off (pose graphs: on, :func:`~mpslam_ros.problems.pgo.pgo_options`).
    direct_fallback: Optional[bool] = None
    #: Step refinement sweeps (None/0: off; pose graphs: 2): when J or the residual is stored below fp64,
    #: the step's residual ``-g - (J^T J + lambda I) y`` is recomputed with the fp64 Jacobian and, while
    #: above ``cg_tolerance`` of ``|g|``, corrected by another low-precision CG solve. Why: fp32 products
    #: cannot resolve the near-null modes of a long chain (condition ~1e10), so a fp32 / mixed step could
    #: differ from the fp64 one by far more than the CG tolerance; on a generated 1,500-pose 2-D graph
    #: from its odometry guess the first mixed step was rejected where fp64's was accepted, and mixed LM
    #: ended in another local minimum 2.9 % above fp64 LM's. Needs ``fp64_gradient``.
    step_refinement: Optional[int] = None
    #: When LM rejects a step computed in reduced precision (fp32 / mixed; not the naive fp16 preset),
    #: compute the same step (same linearisation and lambda) with fp64 CG and try that before shrinking
    #: the trust region (counted in ``SolverSummary.precision_fallbacks``). Why: on a generated
    #: 1,500-pose 2-D graph from its odometry guess the first fp32 step was rejected where fp64's (both
    #: within CG's tolerance; condition ~1e10) was accepted, and fp32 / mixed LM then converged to another
    #: local minimum 2.9 % above fp64 LM's. Rejections are rare near an optimum, so this costs little.
    #: None: off (pose graphs: on; bundle adjustment keeps its own mixed-precision policy).
    precision_fallback: Optional[bool] = None
    #: An fp16-stored ic0/ict factor (the mixed preset) is widened to fp32 for the rest of the solve when a
    #: CG solve with a factor built for that very system (this linearisation and lambda) needed more than
    #: this many iterations (``SolverSummary.factor_widened_at``: the LM iteration). Why: fp16's 11-bit
    #: mantissa in the complete factor of a long SE(3) chain is a much weaker preconditioner than the
    #: same factor in fp32 (generated 3,000-pose SE(3) graph: 16-33 CG iterations per step with a fresh
    #: fp16 factor, 4-11 with fp32; 2.7x the CG time in all), while on this CPU the fp16 triangular solve
    #: is no faster per iteration. None/0: never (the factor stays fp16; pose graphs: 12).
    fp16_factor_max_cg_iterations: Optional[int] = None
    #: A factor already widened from fp16 to fp32 is widened again, to the factor fp64 mode uses (fp64, of
    #: the damped matrix with no diagonal shift, applied in fp64 CG), when a CG solve with a fresh fp32
    #: factor still needs more than this many iterations (``SolverSummary.factor_widened_to_fp64_at``).
    #: Why: the fp32 factor keeps the 1e-8 shift of reduced-precision factors, while LM's lambda on long
    #: SE(3) chains falls to ~1e-12: the shift, not lambda, sets the factor's soft modes (see ``ic_shift``).
    #: Generated 30,000-pose SE(3) graphs, seeds 1-3: mixed 389-795 CG iterations with the fp32 factor kept,
    #: 119-134 widened (fp64: 93-119), 0.87-1.79x GTSAM's time → 0.39-0.80x. From then on mixed's steps are
    #: fp64's. None/0: never (the factor stays fp32; pose graphs: 12).
    fp32_factor_max_cg_iterations: Optional[int] = None
    #: Problems with at most this many free columns skip CG: each LM step is solved directly with an fp64
    #: factor of the damped system (dense Cholesky in one numba call up to ``SMALL_DENSE_COLUMNS``, else the
    #: "ict" block L D L^T factor, built at every step), whatever the precision preset (``SolverSummary.small_problem_direct``). Why: on a 9-pose graph the casts, factor
    #: bookkeeping, CG call and refinement cost more Python time per LM iteration than the arithmetic (tinyGrid3D:
    #: 0.75 ms per solve against GTSAM's 0.33 ms); a factor of a few hundred columns costs microseconds, and
    #: reduced precision saves nothing at that size. Only where the numba block factor applies (equal block
    #: sizes, not the naive fp16 preset). None/0: off (pose graphs: :func:`~mpslam_ros.problems.pgo.pgo_options`).
    small_problem_direct_columns: Optional[int] = None
    #: Bundle adjustment with the dense Schur solver (dense_schur, no robust loss) on at most this many free
    #: camera columns runs its whole LM loop in one numba call (:mod:`mpslam_ros.solvers.schur_ba_small`;
    #: ``SolverSummary.small_problem_loop``): same kernels, same steps and stopping rule, no Python per LM
    #: iteration. Why: on dubrovnik-3-7 (3 cameras, 7 points) each of its 50 LM iterations cost ~0.1 ms of
    #: interpreter time against microseconds of arithmetic (5.4 ms per solve against Ceres SPARSE_SCHUR's
    #: 3.2 ms). None/0: off (bundle adjustment: :data:`~mpslam_ros.solvers.schur_ba_small.SMALL_PROBLEM_SCHUR_COLUMNS`
    #: via :func:`~mpslam_ros.problems.ba.ba_options`).
    small_problem_schur_columns: Optional[int] = None
    #: "ict" factor layout: "block" (d x d blocks, unit block-lower L in the preconditioner format with the
    #: inverse diagonal blocks D^-1 in the CG vector format; used when every free block has the same size
    #: and the CG arithmetic is not emulated fp16) or "scalar" (CSR of C = L sqrt(D) in the preconditioner format).
    #: None: "scalar" (pose graphs use "block", :func:`~mpslam_ros.problems.pgo.pgo_options`).
    ict_layout: Optional[str] = None
    #: Trust region radius (1 / lambda, unit-diagonal scaled system) at the start. Ceres uses 1e4; pose
    #: graphs have eigenvalues far below 1e-4 (long chains), where such damping stalls LM for many steps.
    initial_trust_region_radius: float = 1e8
    #: Radius growth after a step whose gain ratio is at least 0.75 (the linear model was good): at least
    #: this factor instead of Nielsen's at most 3x (GTSAM's LM divides lambda by 10 after every success).
    #: None: Nielsen's rule only (pose graphs too, see below). Why tried: on long SE(3) chains the softest modes need
    #: lambda ~1e-12 on the unit-diagonal system, 1e4 below the start; at <= 3x per step LM crawls there
    #: with gain ratios ~0.9 (generated 30,000-pose SE(3) graph, seed 2: 14-17 LM iterations, GTSAM 7; with 10,
    #: 8). Not a pose-graph default: from the odometry guess of a generated 1,500-pose 2-D graph it made the
    #: direct LM reject 40 of 84 steps (47 iterations, none rejected, without).
    good_step_radius_growth: Optional[float] = None
    #: Geodesic acceleration (:mod:`mpslam_ros.solvers.geodesic`): each step ``v`` gets the second-order
    #: correction ``a / 2`` from one more residual evaluation and one more solve of the same damped system,
    #: kept while ``|a| <= geodesic_max_ratio |v|``; only while LM crawls (``geodesic_crawl_rate``). Not with
    #: a robust loss (its IRLS weights change along the step). None: off (pose graphs: on, :func:`~mpslam_ros.problems.pgo.pgo_options`). Why: LM with
    #: plain steps crawls along the curved valleys of long chains (see the module).
    geodesic_acceleration: Optional[bool] = None
    #: Largest ``|a| / |v|`` (scaled coordinates) for which the acceleration is kept (Transtrum & Sethna: 0.75).
    geodesic_max_ratio: float = 0.75
    #: The acceleration is computed only while LM crawls: near the minimum (the last step lowered the cost by
    #: less than ``far_phase_decrease``) and its relative decrease at least this fraction of the one before
    #: (linear convergence slower than this rate). Why: where LM converges fast (most graphs from a good
    #: start: 4-9 LM iterations) the correction cannot save an iteration and its solve cost 15-90 % more time;
    #: far from the minimum the accelerated fp32 path ended in another local minimum (see the module).
    geodesic_crawl_rate: float = 0.3
    max_trust_region_radius: float = 1e16
    min_trust_region_radius: float = 1e-32
    #: Minimum gain ratio for accepting a step.
    min_relative_decrease: float = 1e-3
    #: None | "huber" | "cauchy", applied to the problem's ``robust_blocks`` (all blocks by default).
    robust_loss: Optional[str] = None
    #: Scale of the robust loss, in whitened residual units (|r| where it starts to bend).
    robust_scale: float = 1.0
    #: Wall-clock limit in seconds (0: none).
    max_time_s: float = 0.0
    #: Right-hand side of the normal equations from the fp64 gradient (rounded once to the CG vector
    #: format) instead of the residual-precision J^T r: mixed-precision iterative refinement, whose
    #: fixed point is the fp64 optimum whatever the precision of J and CG (not for emulated fp16).
    #: None: False (pose graphs: True, :func:`~mpslam_ros.problems.pgo.pgo_options`).
    fp64_gradient: Optional[bool] = None
    verbose: bool = False
    #: Where the CG iterations run: "cpu" (numba CPU kernels), "cuda" (:mod:`mpslam_ros.solvers.cuda`: a GPU,
    #: or numba's CUDA simulator when NUMBA_ENABLE_CUDASIM=1; an error naming the problem when neither is
    #: usable) or "auto" (a GPU only when one is present and J has at least
    #: :data:`~mpslam_ros.solvers.cuda.AUTO_MIN_JACOBIAN_VALUES` values; else the CPU). Evaluation, scaling,
    #: preconditioner builds and the LM logic stay on the CPU. Steps the device loop does not cover (the
    #: emulated-fp16 preset, scalar IC/ict factors) run on the CPU and the summary's ``device_note`` says so.
    device: str = "cpu"

    def validate(self) -> None:
        get_preset(self.precision)
        if self.algorithm not in ("lm", "gn"):
            raise ValueError(f"algorithm must be 'lm' or 'gn', got {self.algorithm!r}")
        if self.linear_solver not in LINEAR_SOLVERS:
            raise ValueError(f"linear_solver must be one of {LINEAR_SOLVERS}, got {self.linear_solver!r}")
        if self.preconditioner not in PRECONDITIONERS:
            raise ValueError(f"preconditioner must be one of {PRECONDITIONERS}, got {self.preconditioner!r}")
        if self.ict_layout not in (None, "block", "scalar"):
            raise ValueError(f"ict_layout must be 'block' or 'scalar', got {self.ict_layout!r}")
        if self.robust_loss not in ROBUST_LOSSES:
            raise ValueError(f"robust_loss must be one of {ROBUST_LOSSES}, got {self.robust_loss!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")


@dataclass
class SolverSummary:
    """What happened in one :func:`solve` (times in seconds)."""

    precision: str = ""
    linear_solver: str = ""
    preconditioner: str = ""
    initial_cost: float = float("nan")
    final_cost: float = float("nan")
    iterations: int = 0
    successful_iterations: int = 0
    cg_iterations: int = 0
    termination: str = "not run"
    converged: bool = False
    time_s: float = 0.0
    #: residual + Jacobian evaluation (problem) and robust weighting.
    evaluation_time_s: float = 0.0
    #: column/global scaling and casts to the storage formats.
    scaling_time_s: float = 0.0
    #: block-Jacobi blocks or incomplete Cholesky factorisation (and its casts).
    preconditioner_time_s: float = 0.0
    #: the whole linear solve (CGNR or direct), including the two rows below.
    linear_solve_time_s: float = 0.0
    #: preconditioner applications inside CG (the two triangular solves for IC(0)).
    triangular_solve_time_s: float = 0.0
    #: J p and J^T q products inside CG.
    jacobian_product_time_s: float = 0.0
    #: state update (retraction) and step bookkeeping.
    update_time_s: float = 0.0
    #: steps whose low-precision solve produced inf/NaN and were redone in fp32.
    fp16_fallbacks: int = 0
    #: IC(0) breakdowns (restarted with a larger shift) and factor (re)builds.
    ic_breakdowns: int = 0
    ic_builds: int = 0
    ic_shift: float = 0.0
    #: factor rebuilds because LM's lambda moved beyond ``ic_damping_ratio`` of the factor's lambda.
    ic_damping_rebuilds: int = 0
    #: CG solves with a factor from an earlier linearisation that spent their budget and rebuilt it.
    ic_stale_failures: int = 0
    #: LM steps whose CG solve did not converge even with a fresh factor and were solved directly (fp64).
    direct_fallbacks: int = 0
    #: step refinement sweeps done (see ``SolverOptions.step_refinement``).
    refinement_sweeps: int = 0
    #: rejected reduced-precision steps recomputed in fp64 (see ``SolverOptions.precision_fallback``).
    precision_fallbacks: int = 0
    #: Steps taken with geodesic acceleration, and steps whose acceleration was too large and dropped.
    geodesic_steps: int = 0
    geodesic_dropped: int = 0
    #: LM iteration at which the fp16 factor was widened to fp32 (-1: never; see
    #: ``SolverOptions.fp16_factor_max_cg_iterations``).
    factor_widened_at: int = -1
    #: LM iteration at which that fp32 factor was widened again, to fp64 with no shift (-1: never; see
    #: ``SolverOptions.fp32_factor_max_cg_iterations``).
    factor_widened_to_fp64_at: int = -1
    #: every step was solved directly in fp64 (problem at most ``SolverOptions.small_problem_direct_columns``).
    small_problem_direct: bool = False
    #: the whole BA LM loop ran in one numba call (dense_schur on a problem of at most
    #: ``SolverOptions.small_problem_schur_columns`` free camera columns).
    small_problem_loop: bool = False
    #: LM iteration at which dense_schur's fp16-stored BA Jacobian was widened to fp32 (-1: never; see
    #: :data:`mpslam_ros.solvers.schur_ba.FP16_MODEL_MAX_DISAGREEMENT`).
    jacobian_widened_at: int = -1
    #: bytes of stored operands: Jacobian values (as stored for CG) and preconditioner values.
    jacobian_bytes: int = 0
    preconditioner_bytes: int = 0
    #: per-iteration log: cost, relative decrease, gradient max-norm, step norm, radius, cg iterations, accepted.
    history: list = field(default_factory=list)
    #: where the CG iterations ran: "cpu", "cuda", or "cuda+cpu" (some steps on each; see device_note).
    device: str = "cpu"
    #: why that device (e.g. the GPU's name, "numba CUDA simulator ...", why "auto" chose the CPU).
    device_note: str = ""

    def to_dict(self, history: bool = False) -> dict:
        d = asdict(self)
        if not history:
            d.pop("history")
        return d

    def report(self) -> str:
        rows = [
            ("precision", self.precision),
            ("device", self.device + (f" ({self.device_note})" if self.device_note else "")),
            ("linear solver", "direct fp64 factor (small problem: no CG)" if self.small_problem_direct
             else f"{self.linear_solver} ({self.preconditioner})" if self.linear_solver == "cgnr"
             else f"{self.linear_solver} (small problem: whole LM loop in one numba call)"
             if self.small_problem_loop else self.linear_solver),
            ("initial cost", f"{self.initial_cost:.9g}"),
            ("final cost", f"{self.final_cost:.9g}"),
            ("iterations", f"{self.iterations} ({self.successful_iterations} successful)"),
            ("CG iterations", str(self.cg_iterations)),
            ("fp16 fallbacks", str(self.fp16_fallbacks)),
            ("IC builds / breakdowns", f"{self.ic_builds} / {self.ic_breakdowns} (shift {self.ic_shift:.1e})"
                                       + (f", {self.ic_damping_rebuilds} for a new damping"
                                          if self.ic_damping_rebuilds else "")
                                       + (f", {self.ic_stale_failures} after an old factor spent its CG budget"
                                          if self.ic_stale_failures else "")),
            ("fp64 step retries", f"{self.precision_fallbacks}" + (
                " (reduced-precision steps rejected by LM, recomputed in fp64)" if self.precision_fallbacks else "")),
            ("fp16 factor", "widened to fp32 at iteration " + str(self.factor_widened_at)
             + " (CG with a fresh fp16 factor converged slowly)" + (
                 ", to fp64 with no shift at iteration " + str(self.factor_widened_to_fp64_at)
                 + " (a fresh fp32 factor too)" if self.factor_widened_to_fp64_at >= 0 else "")
             if self.factor_widened_at >= 0 else "not widened"),
            ("fp16 jacobian", "widened to fp32 at iteration " + str(self.jacobian_widened_at)
             + " (the fp16 model disagreed with the fp64 one on a large step)" if self.jacobian_widened_at >= 0
             else "not widened"),
            ("geodesic acceleration", f"{self.geodesic_steps} steps" + (
                f", {self.geodesic_dropped} dropped (correction too large)" if self.geodesic_dropped else "")),
            ("direct-solve fallbacks", f"{self.direct_fallbacks}" + (
                " (CG did not converge on these steps: solved with the fp64 sparse direct solver)"
                if self.direct_fallbacks else "")),
            ("jacobian storage", f"{self.jacobian_bytes / 1024:.1f} KiB"),
            ("preconditioner storage", f"{self.preconditioner_bytes / 1024:.1f} KiB"),
            ("time: evaluation", f"{self.evaluation_time_s:.4f} s"),
            ("time: scaling/casts", f"{self.scaling_time_s:.4f} s"),
            ("time: preconditioner build", f"{self.preconditioner_time_s:.4f} s"),
            ("time: linear solve", f"{self.linear_solve_time_s:.4f} s"),
            ("  of which triangular solves", f"{self.triangular_solve_time_s:.4f} s"),
            ("  of which J products", f"{self.jacobian_product_time_s:.4f} s"),
            ("time: update", f"{self.update_time_s:.4f} s"),
            ("time: total", f"{self.time_s:.4f} s"),
            ("termination", self.termination),
        ]
        w = max(len(r[0]) for r in rows)
        return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


# --------------------------------------------------------------------------- robust losses


def robust_weights(sq_norms: np.ndarray, loss: Optional[str], scale: float):
    """(rho(s), sqrt(rho'(s))) for s = |r|^2 per residual block; rho(s) = s without a loss."""
    if loss is None:
        return sq_norms, np.ones_like(sq_norms)
    c2 = scale * scale
    if loss == "huber":
        inlier = sq_norms <= c2
        root = np.sqrt(np.maximum(sq_norms, 1e-300))
        rho = np.where(inlier, sq_norms, 2.0 * scale * root - c2)
        drho = np.where(inlier, 1.0, scale / root)
    elif loss == "cauchy":
        rho = c2 * np.log1p(sq_norms / c2)
        drho = 1.0 / (1.0 + sq_norms / c2)
    else:
        raise ValueError(f"unknown robust loss {loss!r}")
    return rho, np.sqrt(drho)


# --------------------------------------------------------------------------- workspace


class _Layout:
    """Column layout of the free parameters and the sparsity of J (built once per solve)."""

    def __init__(self, problem: LeastSquaresProblem):
        # (few numpy calls, no Python lists: this runs once per solve, and on a 9-pose graph it was a
        # quarter of the solve's fixed cost)
        sizes = np.asarray(problem.parameter_block_sizes, dtype=np.int64)
        fixed = np.asarray(problem.fixed_blocks, dtype=bool)
        nb = len(sizes)
        self.full_offsets = np.zeros(nb + 1, dtype=np.int64)
        np.cumsum(sizes, out=self.full_offsets[1:])
        self.n_full = int(self.full_offsets[-1])
        free = ~fixed
        free_sizes = sizes * free
        col_start = np.zeros(nb, dtype=np.int64)
        np.cumsum(free_sizes[:-1], out=col_start[1:])
        col_start[fixed] = -1
        self.n = int(free_sizes.sum())
        if self.n == 0:
            raise ValueError("every parameter block is fixed: nothing to optimise")
        a = np.asarray(problem.block_a, dtype=np.int64)
        b = np.asarray(problem.block_b, dtype=np.int64)
        self.col_a = col_start[a]
        self.col_b = np.where(b >= 0, col_start[b], -1)  # (b = -1 reads the last block; replaced by -1)
        self.m, self.da, self.db = int(problem.residual_dim), int(problem.dim_a), int(problem.dim_b)
        # free column -> index in the full update vector
        self.free_to_full = np.flatnonzero(np.repeat(free, sizes)).astype(np.int64)
        # block-Jacobi layout: one dense block per free parameter block
        free_blocks = np.flatnonzero(free)
        self.bd_col = col_start[free_blocks]
        self.bd_size = sizes[free_blocks]
        sq = self.bd_size * self.bd_size
        self.bd_off = np.zeros(len(sq), dtype=np.int64)
        np.cumsum(sq[:-1], out=self.bd_off[1:])
        blk_off_of_block = np.zeros(nb, dtype=np.int64)
        blk_off_of_block[free_blocks] = self.bd_off
        self.off_a = blk_off_of_block[a]
        self.off_b = blk_off_of_block[b]  # (b = -1: unused, col_b is -1)
        self.bd_total = int(sq.sum())
        self._jrows = None

    def jacobian_csr(self, Ja: np.ndarray, Jb: np.ndarray) -> sp.csr_matrix:
        """J as a scipy CSR matrix (fp64), for the IC(0) pattern and the direct baseline."""
        Kn, m, da, db = len(self.col_a), self.m, self.da, self.db
        if self._jrows is None:
            rows_a = np.repeat(np.arange(Kn * m), da).reshape(Kn, m, da)
            cols_a = (self.col_a[:, None, None] + np.arange(da)[None, None, :]) + np.zeros((1, m, 1), np.int64)
            rows_b = np.repeat(np.arange(Kn * m), db).reshape(Kn, m, db)
            cols_b = (self.col_b[:, None, None] + np.arange(db)[None, None, :]) + np.zeros((1, m, 1), np.int64)
            keep_a = np.broadcast_to((self.col_a >= 0)[:, None, None], (Kn, m, da))
            keep_b = np.broadcast_to((self.col_b >= 0)[:, None, None], (Kn, m, db))
            self._jrows = (rows_a[keep_a], cols_a[keep_a], keep_a, rows_b[keep_b], cols_b[keep_b], keep_b)
        ra, ca, ka, rb, cb, kb = self._jrows
        data = np.concatenate([Ja[ka], Jb[kb]])
        return sp.csr_matrix((data, (np.concatenate([ra, rb]), np.concatenate([ca, cb]))),
                             shape=(Kn * m, self.n))


def _ic0_lower(A: sp.spmatrix):
    """Lower triangle of A as CSR with sorted columns (diagonal last in each row)."""
    L = sp.tril(A, format="csr")
    L.sum_duplicates()
    L.sort_indices()
    return L.indptr.astype(np.int64), L.indices.astype(np.int64), L.data.astype(np.float64)


class _Preconditioner:
    """Arrays passed to :func:`kernels.cgnr` (unused ones are empty)."""

    def __init__(self, storage_dtype: np.dtype):
        empty_i = np.zeros(1, dtype=np.int64)
        self.kind = K.PC_NONE
        self.bd_vals = np.zeros(1, dtype=storage_dtype)
        self.bd_col = np.zeros(0, dtype=np.int64)
        self.bd_size = empty_i
        self.bd_off = empty_i
        self.L_indptr = np.zeros(1, dtype=np.int64)
        self.L_indices = empty_i
        self.L_vals = np.zeros(1, dtype=storage_dtype)
        self.L64: Optional[np.ndarray] = None
        self.L_perm = np.zeros(0, dtype=np.int64)
        # block L D L^T layout (PC_BLOCK_LDL): fp64 off-diagonal blocks (scaled) and inverse diagonal blocks
        self.L_diag64 = np.zeros(1)
        self.L_diag = np.zeros(1)
        self.L_block = 0
        self.L_inv_scale = 1.0
        self.bd64: Optional[np.ndarray] = None
        self.storage: Optional[str] = None

    @property
    def nbytes(self) -> int:
        if self.kind == K.PC_BLOCK_JACOBI:
            return K.bytes_of(self.bd_vals)
        if self.kind == K.PC_IC:
            return K.bytes_of(self.L_vals)
        if self.kind == K.PC_BLOCK_LDL:
            return K.bytes_of(self.L_vals, self.L_diag)
        return 0

    def cast(self, storage: str) -> "_Preconditioner":
        out = _Preconditioner(np.dtype(np.float32))
        out.__dict__.update(self.__dict__)
        if self.kind == K.PC_BLOCK_JACOBI:
            out.bd_vals = to_storage(self.bd64, storage)
        elif self.kind in (K.PC_IC, K.PC_BLOCK_LDL):
            out.L_vals = to_storage(self.L64, storage)
            # the block pivots stay in the CG vector format (never fp16)
            out.L_diag = self.L_diag64.astype(np.float64 if storage == "fp64" else np.float32)
        return out


# --------------------------------------------------------------------------- solve



def grown_radius(radius: float, rho_gain: float, good_step_radius_growth: float,
                 max_trust_region_radius: float) -> float:
    """Nielsen's radius growth after an accepted step (scalars only, so that the BA small-problem loop,
    :mod:`mpslam_ros.solvers.schur_ba_small`, compiles this very function with numba)."""
    growth = 1.0 / max(1.0 / 3.0, 1.0 - (2.0 * rho_gain - 1.0) ** 3)
    if good_step_radius_growth > 0.0 and rho_gain >= 0.75:
        growth = max(growth, good_step_radius_growth)
    return min(radius * growth, max_trust_region_radius)


def grown_trust_region(radius: float, rho_gain: float, options: "SolverOptions") -> float:
    """Trust-region radius after an accepted step with gain ratio ``rho_gain`` (Nielsen's update, as
    Ceres' LevenbergMarquardtStrategy), capped at ``options.max_trust_region_radius``."""
    return grown_radius(radius, rho_gain, float(options.good_step_radius_growth or 0.0),
                        options.max_trust_region_radius)


def shrunk_trust_region(radius: float, decrease_factor: float) -> tuple:
    """(radius, decrease factor) after a rejected step: divide by the factor, which doubles on each
    rejection in a row (Nielsen's update, as Ceres)."""
    return radius / decrease_factor, decrease_factor * 2.0


def trust_region_collapsed(summary: "SolverSummary", radius: float, options: "SolverOptions") -> bool:
    """True (and the summary says why) when the radius fell below ``options.min_trust_region_radius``."""
    if radius >= options.min_trust_region_radius:
        return False
    summary.termination = "failure: trust region collapsed (no step decreases the cost)"
    return True


def converged_after_step(summary: "SolverSummary", cost: float, rel_change: float, pred_rel: float,
                         options: "SolverOptions") -> bool:
    """After an accepted step: True (and ``summary`` says why) on zero cost, or when the relative cost
    change is below ``function_tolerance`` *and* the linear model agrees that little is left (its
    predicted decrease is small too): in a curved valley LM crawls with gain ratios ~0.25 and tiny
    actual decreases, and stopping there left a generated 3,000-pose graph 5e-4 above the minimum that
    the same run reaches when it goes on."""
    why = function_converged(cost, rel_change, pred_rel, options.function_tolerance, options.model_agreement_factor)
    if why == CONVERGED_ZERO_COST:
        summary.termination = "converged: zero cost"
    elif why == CONVERGED_COST_CHANGE:
        summary.termination = f"converged: relative cost change {rel_change:.3e} <= {options.function_tolerance:g}"
    else:
        return False
    summary.converged = True
    return True


#: :func:`function_converged`'s answers (0: not converged)
CONVERGED_ZERO_COST = 1
CONVERGED_COST_CHANGE = 2


def function_converged(cost: float, rel_change: float, pred_rel: float, function_tolerance: float,
                       model_agreement_factor: float) -> int:
    """The test of :func:`converged_after_step` on scalars (0, :data:`CONVERGED_ZERO_COST` or
    :data:`CONVERGED_COST_CHANGE`), so that the BA small-problem loop compiles this very function."""
    if cost == 0.0:
        return CONVERGED_ZERO_COST
    if rel_change <= function_tolerance and pred_rel <= function_tolerance * model_agreement_factor:
        return CONVERGED_COST_CHANGE
    return 0


def evaluate_weighted(problem, jac: bool, options: "SolverOptions", mask, summary: "SolverSummary") -> tuple:
    """(cost, r, Ja, Jb) at the problem's state: cost = 0.5 sum rho(|r_k|^2) (rho only where ``mask``),
    r and J weighted by the IRLS weights sqrt(rho') of a robust loss; time added to the summary."""
    t0 = time.perf_counter()
    r, Ja, Jb = problem.evaluate(jacobians=jac)
    sq = np.einsum("km,km->k", r, r)
    if options.robust_loss is not None:
        rho, w = robust_weights(sq, options.robust_loss, options.robust_scale)
        rho = np.where(mask, rho, sq)
        w = np.where(mask, w, 1.0)
        cost = 0.5 * float(rho.sum())
        r = r * w[:, None]
        if jac:
            Ja = Ja * w[:, None, None]
            Jb = Jb * w[:, None, None]
    else:
        cost = 0.5 * float(sq.sum())
    summary.evaluation_time_s += time.perf_counter() - t0
    return cost, r, Ja, Jb


def initial_cost_failed(summary: "SolverSummary", cost: float, t_start: float) -> bool:
    """Record the initial cost; True (and the summary says why) when it is not finite."""
    summary.initial_cost = summary.final_cost = cost
    if math.isfinite(cost):
        return False
    summary.termination = "failure: initial cost is not finite (check the input data)"
    summary.time_s = time.perf_counter() - t_start
    return True


def solve(problem: LeastSquaresProblem, options: Optional[SolverOptions] = None) -> SolverSummary:
    """Minimise ``0.5 * sum rho(|r_k|^2)`` over the problem's free parameter blocks, in place."""
    options = options or SolverOptions()
    if options.ic_rebuild_cg_iterations is None:
        options = dataclasses.replace(options, ic_rebuild_cg_iterations=30)
    options.validate()
    check_problem(problem)
    preset = get_preset(options.precision)
    summary = SolverSummary(precision=preset.name, linear_solver=options.linear_solver,
                            preconditioner=options.preconditioner if options.linear_solver == "cgnr" else "-")
    t_start = time.perf_counter()
    tps = K.ticks_per_second()
    layout = _Layout(problem)
    mask = robust_mask(problem)
    device, summary.device_note = resolve_device(options.device,
                                                 len(layout.col_a) * layout.m * (layout.da + layout.db))
    half = preset.emulate_half
    vec_dtype = arithmetic_dtype(preset.cg_vectors)
    res_dtype = arithmetic_dtype(preset.residual)

    def evaluate(jac: bool):
        return evaluate_weighted(problem, jac, options, mask, summary)

    cost, r, Ja, Jb = evaluate(True)
    if initial_cost_failed(summary, cost, t_start):
        return summary

    # small problems: every step by the fp64 block factor, no CG (see SolverOptions.small_problem_direct_columns)
    small = bool(options.small_problem_direct_columns and options.linear_solver == "cgnr" and device == "cpu"
                 and layout.n <= options.small_problem_direct_columns
                 and _numba_block_factor_applies(options, layout, Ja, Jb, half))
    summary.small_problem_direct = small

    radius = options.initial_trust_region_radius
    decrease_factor = 2.0
    col_scale = None
    # static factor (kept across iterations), its shift, build time and fill-reducing order
    ic_shift = 1e-8 if options.ic_shift is None else options.ic_shift
    pc_state = {"pc": None, "shift": ic_shift, "ic_shift": ic_shift, "build_s": 0.0, "cg_on": set()}  # cg_on: devices CG ran on
    if device == "cuda":
        from mpslam_ros.solvers.cuda.cgnr import CudaCGNR

        # device-resident for the whole solve: column maps, work vectors, J per linearisation, the factor
        pc_state["cuda"] = CudaCGNR(layout.col_a, layout.col_b, layout.n, layout.m, layout.bd_col, layout.bd_size,
                                    layout.bd_off)
    colnorm = np.empty(layout.n)
    bd64 = np.empty(layout.bd_total)
    step_full = np.zeros(layout.n_full)
    n_sqrt = math.sqrt(layout.n)
    far = True  # no step taken yet: the first is computed as if far from the minimum
    geodesic = bool(options.geodesic_acceleration) and options.robust_loss is None
    crawling, last_rel_change = False, 0.0
    # the correction is a second-order term: a loose CG tolerance, no refinement
    options_correction = dataclasses.replace(options, step_refinement=0, cg_tolerance=0.1)
    options_far = (dataclasses.replace(options, cg_tolerance=options.cg_tolerance_far)
                   if options.cg_tolerance_far else options)

    for it in range(options.max_iterations):
        if options.max_time_s and time.perf_counter() - t_start > options.max_time_s:
            summary.termination = "time limit reached"
            break
        # ---- scaling and casts
        t0 = time.perf_counter()
        if col_scale is None:
            K.jtj_column_norms2(Ja, Jb, layout.col_a, layout.col_b, colnorm)
            col_scale = 1.0 / np.sqrt(np.maximum(colnorm, 1e-12 * max(colnorm.max(), 1e-300)))
            if not preset.scaling:
                col_scale = np.ones(layout.n)
        S64a = np.empty(Ja.shape)
        S64b = np.empty(Jb.shape)
        K.scale_jacobian(Ja, Jb, layout.col_a, layout.col_b, col_scale, 1.0, S64a, S64b)
        if preset.scaling and not small:  # (the fp64 direct solve needs no range scale)
            max_abs = max(finite_max_abs(S64a.ravel()), finite_max_abs(S64b.ravel()))  # no |S| temporaries
            g = power_of_two_scale(max_abs)
        else:
            g = 1.0
        if g != 1.0:
            S64a *= g
            S64b *= g
        gr = r * g
        # gradient (fp64) for the stopping test; residual-precision right-hand side for CG
        grad = np.empty(layout.n)
        K.jac_t_matvec(S64a, S64b, layout.col_a, layout.col_b, gr.ravel(), grad, False)
        grad_max = float(np.abs(grad / (col_scale * g * g)).max())
        if small:  # the direct fp64 solve needs no casts
            Ra, Rb, rhs = S64a, S64b, None
        else:
            Ra = round_to(S64a, preset.residual)
            Rb = round_to(S64b, preset.residual)
        if small:
            pass
        elif options.fp64_gradient and not half:
            # iterative refinement: the fp64 gradient, rounded once to the CG vector format, so LM's
            # fixed point is the fp64 optimum (the low precision only perturbs the step)
            rhs = (-grad).astype(vec_dtype)
        else:
            rhs = np.empty(layout.n, dtype=vec_dtype)
            K.jac_t_matvec(Ra, Rb, layout.col_a, layout.col_b,
                           round_to(gr.ravel(), preset.residual).astype(vec_dtype), rhs, half)
            rhs = -rhs
        if small or (preset.jacobian_storage == preset.residual and preset.residual != "fp16"):
            Sa, Sb = Ra, Rb
        else:
            Sa, Sb = to_storage(S64a, preset.jacobian_storage), to_storage(S64b, preset.jacobian_storage)
        summary.jacobian_bytes = K.bytes_of(Sa, Sb)
        summary.scaling_time_s += time.perf_counter() - t0

        if grad_max <= options.gradient_tolerance:
            summary.termination = f"converged: gradient max-norm {grad_max:.3e} <= {options.gradient_tolerance:g}"
            summary.converged = True
            break

        lam = 0.0 if options.algorithm == "gn" else 1.0 / radius
        lam_s = lam * g * g
        pc_state["linearisation"] = summary.successful_iterations  # J changes only when a step is accepted
        pc_state["lam"] = lam

        # ---- linear solve (and, for a reduced-precision step that LM rejects, the same step in fp64)
        # (a factor widened to fp64 already makes the step fp64's: a retry would recompute the same one)
        low_precision = not small and not half and pc_state.get("factor_widened") != "fp64" and any(
            getattr(preset, f) != "fp64" for f in ("residual", "jacobian_storage", "cg_vectors", "preconditioner_storage"))
        stop = False
        step_options = options_far if far else options
        for attempt in range(2 if options.precision_fallback and low_precision else 1):
            if small:
                def linear(b64, b=None, opts=None):
                    return _small_direct_solve(layout, summary, S64a, S64b, b64, lam_s, pc_state)
            elif attempt == 0:
                def linear(b64, b=None, opts=step_options):
                    return _linear_solve(opts, preset, layout, summary, S64a, S64b, Sa, Sb,
                                         b64.astype(vec_dtype) if b is None else b, lam_s, g, half, vec_dtype, bd64,
                                         tps, pc_state, b64 if options.fp64_gradient and not half else None)
            else:
                # fp32 products cannot resolve a long chain's near-null modes (condition ~1e10): a
                # reduced-precision step can fail where the fp64 step succeeds, and LM then shrinks
                # its trust region and leaves fp64 LM's path (see SolverOptions.precision_fallback)
                summary.precision_fallbacks += 1

                def linear(b64, b=None, opts=step_options):
                    return _linear_solve(opts, _FP64, layout, summary, S64a, S64b, S64a, S64b, b64, lam_s,
                                         g, False, np.dtype(np.float64), bd64, tps, pc_state)
            y, cg_its, ok = linear(-grad, None if small or attempt else rhs)
            if attempt == 0:
                summary.iterations += 1
            summary.cg_iterations += cg_its

            t0 = time.perf_counter()
            if not ok:
                # non-finite step (naive fp16 without fallback): treat as a failed step
                new_cost = float("nan")
                accepted = False
                step_norm = float("nan")
                rho_gain = float("nan")
            else:
                delta = y.astype(np.float64) * col_scale
                step_norm = math.sqrt(_dot(delta, delta))
                # predicted decrease of the (robust-weighted) linear model, in fp64
                Jd = np.empty(r.size)
                K.jac_matvec(Ja, Jb, layout.col_a, layout.col_b, delta, Jd, False)
                rr = r.ravel()
                pred = -(_dot(rr, Jd) + 0.5 * _dot(Jd, Jd))
                if step_norm <= options.parameter_tolerance * (n_sqrt + options.parameter_tolerance):
                    summary.termination = f"converged: step norm {step_norm:.3e} below parameter tolerance"
                    summary.converged = True
                    summary.update_time_s += time.perf_counter() - t0
                    _log(summary, options, it, cost, float("nan"), grad_max, step_norm, radius, cg_its, False)
                    stop = True
                    break
                step_full[:] = 0.0
                step_full[layout.free_to_full] = delta
                saved = problem.get_state()
                if geodesic and crawling:
                    # second-order correction along the curved valley (solvers.geodesic); rho stays
                    # measured against the plain step's model
                    r_vv = residual_second_derivative(problem, saved, rr, Jd, step_full)
                    b_vv = np.empty(layout.n)
                    K.jac_t_matvec(S64a, S64b, layout.col_a, layout.col_b, g * r_vv, b_vv, False)
                    y_a, cg_a, ok_a = linear(-b_vv, None, options_correction)
                    summary.cg_iterations += cg_a
                    cg_its += cg_a
                    if ok_a and acceleration_kept(y.astype(np.float64), y_a.astype(np.float64),
                                                  options.geodesic_max_ratio):
                        delta = delta + 0.5 * y_a.astype(np.float64) * col_scale
                        step_full[layout.free_to_full] = delta
                        step_norm = math.sqrt(_dot(delta, delta))
                        summary.geodesic_steps += 1
                    else:
                        summary.geodesic_dropped += 1
                problem.retract(step_full)
                summary.update_time_s += time.perf_counter() - t0
                new_cost, r_new, Ja_new, Jb_new = evaluate(True)
                t0 = time.perf_counter()
                rho_gain = (cost - new_cost) / pred if pred > 0 else -1.0
                accepted = math.isfinite(new_cost) and new_cost < cost and (
                    options.algorithm == "gn" or rho_gain > options.min_relative_decrease)
                if not accepted:
                    problem.set_state(saved)
            if accepted:
                break
        if stop:
            break
        _log(summary, options, it, new_cost if accepted else cost, rho_gain, grad_max, step_norm, radius, cg_its,
             accepted)
        if accepted:
            rel_change = (cost - new_cost) / max(cost, 1e-300)
            pred_rel = pred / max(cost, 1e-300)
            far = rel_change > options.far_phase_decrease
            # LM crawls (linear convergence at a rate above geodesic_crawl_rate): accelerate the next step
            crawling = (not far and last_rel_change > 0.0
                        and rel_change >= options.geodesic_crawl_rate * last_rel_change)
            last_rel_change = rel_change
            cost, r, Ja, Jb = new_cost, r_new, Ja_new, Jb_new
            summary.successful_iterations += 1
            radius = grown_trust_region(radius, rho_gain, options)
            decrease_factor = 2.0
            summary.update_time_s += time.perf_counter() - t0
            if converged_after_step(summary, cost, rel_change, pred_rel, options):
                break
        else:
            summary.update_time_s += time.perf_counter() - t0
            if options.algorithm == "gn":
                summary.termination = "Gauss-Newton step did not decrease the cost"
                summary.converged = False
                break
            radius, decrease_factor = shrunk_trust_region(radius, decrease_factor)
            if trust_region_collapsed(summary, radius, options):
                break
    else:
        summary.termination = f"maximum iterations ({options.max_iterations}) reached"

    summary.final_cost = cost
    summary.ic_shift = pc_state["shift"] if options.preconditioner in ("ic0", "ict") else 0.0
    summary.device = "+".join(d for d in ("cuda", "cpu") if d in pc_state["cg_on"]) or device
    summary.time_s = time.perf_counter() - t_start
    return summary


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    """Vector dot product without BLAS: OpenBLAS's threaded ddot spins against other jobs on a shared
    machine (measured 11 ms instead of ~20 us for 18,000 entries on the 2-core VM under load), and these
    run every LM iteration."""
    if a.shape[0] <= 4096:  # (below OpenBLAS's threading threshold, and einsum's dispatch costs more)
        return float(np.dot(a, b))
    return float(np.einsum("i,i->", a, b))


def _log(summary, options, it, cost, gain, grad_max, step_norm, radius, cg_its, accepted):
    summary.history.append(dict(iteration=it, cost=cost, gain_ratio=gain, gradient_max_norm=grad_max,
                                step_norm=step_norm, trust_region_radius=radius, cg_iterations=cg_its,
                                accepted=bool(accepted)))
    if options.verbose:
        print(f"iter {it:3d}  cost {cost:.9e}  gain {gain:+.3e}  |g| {grad_max:.2e}  |dx| {step_norm:.2e}  "
              f"radius {radius:.2e}  cg {cg_its:4d}  {'ok' if accepted else 'rejected'}")


def _next_shift(summary, shift: float, what: str) -> float:
    """After a factor breakdown: count it and return the 10x larger diagonal shift to retry with."""
    summary.ic_breakdowns += 1
    shift = max(shift * 10.0, 1e-8)
    if shift > 1e6:
        raise RuntimeError(f"{what} kept breaking down (matrix not positive definite?)")
    return shift


def _build_preconditioner(options, preset, layout, summary, S64a, S64b, lam_s, bd64, state, storage, half=False):
    """Block-Jacobi (rebuilt each iteration) or the static IC(0) factor (built once, kept in ``state``)."""
    t0 = time.perf_counter()
    pc = _Preconditioner(np.dtype(np.float32))
    if options.preconditioner == "block_jacobi":
        K.jtj_block_diagonal(S64a, S64b, layout.col_a, layout.col_b, layout.off_a, layout.off_b, bd64)
        inv = np.empty_like(bd64)
        for size in np.unique(layout.bd_size):
            sel = layout.bd_size == size
            idx = layout.bd_off[sel][:, None] + np.arange(size * size)[None, :]
            blocks = bd64[idx].reshape(-1, size, size) + lam_s * np.eye(size)
            blocks += 1e-12 * np.trace(blocks, axis1=1, axis2=2)[:, None, None] * np.eye(size) / size
            inv[idx] = np.linalg.inv(blocks).reshape(-1, size * size)
        pc.kind = K.PC_BLOCK_JACOBI
        pc.bd64 = inv
        pc.bd_col, pc.bd_size, pc.bd_off = layout.bd_col, layout.bd_size, layout.bd_off
        pc = pc.cast(storage)
        summary.preconditioner_time_s += time.perf_counter() - t0
        return pc
    elif options.preconditioner in ("ic0", "ict"):
        if state.get("pc") is not None:
            pc = state["pc"]
            if pc.storage != storage:
                pc = pc.cast(storage)
                pc.storage = storage
            return pc
        state["built_at"] = state.get("linearisation")
        # the factor is of the damped matrix (see SolverOptions.ic_damping_ratio)
        # (not for the naive fp16 preset: it is the unprotected baseline that shows the failure)
        damping = lam_s if options.ic_damping_ratio and not half else 0.0
        state["lam_built"] = state.get("lam", 0.0)
        if options.preconditioner == "ict":
            if _numba_block_factor_applies(options, layout, S64a, S64b, half):
                _build_block_ict(summary, layout, S64a, S64b, state, pc, damping)
            else:
                J = layout.jacobian_csr(S64a, S64b)
                A = (J.T @ J).tocsr()
                if damping > 0.0:
                    A = (A + sp.identity(layout.n, format="csr") * damping).tocsr()
                _build_ict(options, summary, A, state, pc, layout,
                           block=options.ict_layout == "block" and not half)
            pc = pc.cast(storage)
            pc.storage = storage
            state["pc"] = pc
            state["build_s"] = time.perf_counter() - t0
            summary.preconditioner_time_s += state["build_s"]
            return pc
        J = layout.jacobian_csr(S64a, S64b)
        A = (J.T @ J).tocsr()
        if damping > 0.0:
            A = (A + sp.identity(layout.n, format="csr") * damping).tocsr()
        diag = A.diagonal()
        indptr, indices, data = _ic0_lower(A)
        diag_pos = indptr[1:] - 1
        L64 = np.empty_like(data)
        shift = state["shift"]
        while True:
            shifted = data.copy()
            shifted[diag_pos] += shift * np.maximum(diag, 1e-300)
            bad_row = K.ic0_factor(indptr, indices, shifted, L64)
            if bad_row < 0 and np.all(np.isfinite(L64)):
                break
            shift = _next_shift(summary, shift, "incomplete Cholesky")
        summary.ic_builds += 1
        state["shift"] = shift
        pc.kind = K.PC_IC
        pc.L_indptr, pc.L_indices = indptr, indices
        pc.L64 = L64
        pc = pc.cast(storage)
        pc.storage = storage
        state["pc"] = pc
        state["build_s"] = time.perf_counter() - t0
    summary.preconditioner_time_s += time.perf_counter() - t0
    return pc


def _build_ict(options, summary, A, state, pc, layout=None, block=False) -> None:
    """Static threshold-dropped Cholesky factor of A + shift diag(A), in minimum-degree order.

    The complete factor is computed once in fp64 (SuperLU with symmetric minimum-degree ordering and
    no pivoting: for an SPD matrix ``U = D L^T`` and ``C = L sqrt(D)``), then entries below
    ``ict_drop_tolerance * sqrt(C_ii C_jj)`` are dropped; what remains is stored in the preset's
    preconditioner format. A non-positive pivot restarts with a 10x larger shift.
    """
    n = A.shape[0]
    # fill-reducing order: minimum degree on the block graph (cheap, computed once per solve),
    # expanded to scalar columns; SuperLU then factors P A P^T in natural order
    perm = state.get("ict_perm")
    if perm is None:
        if layout is not None:
            border = _block_minimum_degree(layout)
            perm = np.concatenate([np.arange(layout.bd_col[k], layout.bd_col[k] + layout.bd_size[k]) for k in border])
        state["ict_perm"] = perm
    if perm is not None:
        A = A[perm][:, perm]
    diag = A.diagonal()
    shift = state["shift"]
    while True:
        As = (A + sp.diags(shift * np.maximum(diag, 1e-300))).tocsc()
        try:
            lu = spla.splu(As, permc_spec="NATURAL" if perm is not None else "MMD_AT_PLUS_A",
                           diag_pivot_thresh=0.0, options=dict(SymmetricMode=True))
            d = lu.U.diagonal()
            ok = bool(np.all(d > 0.0) and np.all(lu.perm_r == lu.perm_c))
        except RuntimeError:  # exactly singular
            ok = False
        if ok:
            break
        shift = _next_shift(summary, shift, "Cholesky preconditioner")
    summary.ic_builds += 1
    state["shift"] = shift
    sq = np.sqrt(d)
    L = lu.L  # (each access of lu.L / lu.U copies the factor out of SuperLU)
    L.data *= np.repeat(sq, np.diff(L.indptr))  # CSC: scale column j by sqrt(d_j)
    C = L.tocsr()
    if options.ict_drop_tolerance > 0.0:
        C = C.tocoo()
        keep = (C.row == C.col) | (np.abs(C.data) >= options.ict_drop_tolerance * sq[C.row] * sq[C.col])
        C = sp.csr_matrix((C.data[keep], (C.row[keep], C.col[keep])), shape=(n, n))
    C.sum_duplicates()
    C.sort_indices()
    # SuperLU: with perm = inverse(perm_c), A[perm][:, perm] = L U (symmetric mode); the kernels
    # permute with (P v)[i] = v[perm[i]]
    inner = np.empty(n, dtype=np.int64)
    inner[lu.perm_c] = np.arange(n)
    perm = inner if perm is None else perm[inner]
    pc.kind = K.PC_IC
    pc.L_indptr = C.indptr.astype(np.int64)
    pc.L_indices = C.indices.astype(np.int64)
    pc.L64 = C.data.astype(np.float64)
    pc.L_perm = perm
    d = int(layout.bd_size[0]) if layout is not None and len(layout.bd_size) else 0
    if (block and d > 1 and np.all(layout.bd_size == d) and np.array_equal(state["ict_perm"], perm)):
        # block-aligned order (SuperLU kept the natural order of the block-permuted matrix): d x d blocks
        pc.kind = K.PC_BLOCK_LDL
        pc.L_indptr, pc.L_indices, pc.L64, pc.L_diag64, pc.L_inv_scale = K.block_ldl_from_cholesky(C, d)
        pc.L_block = d


def _numba_block_factor_applies(options, layout, S64a, S64b, half) -> bool:
    """The numba block factor covers the complete (undropped) block "ict" of equal-size blocks."""
    if options.ict_layout != "block" or half or options.ict_drop_tolerance > 0.0 or not len(layout.bd_size):
        return False
    d = int(layout.bd_size[0])
    return d > 1 and bool(np.all(layout.bd_size == d)) and S64a.shape[2] == d and S64b.shape[2] == d


def _build_block_ict(summary, layout, S64a, S64b, state, pc, damping: float = 0.0) -> None:
    """Block L D L^T of P (J^T J + shift diag) P^T (:mod:`~mpslam_ros.solvers.block_ldl`): the symbolic
    analysis (minimum-degree block order, pattern of L) once per solve, the numeric factor per build."""
    sym = state.get("block_symbolic")
    if sym is None:
        d = int(layout.bd_size[0])
        sym = block_symbolic(layout.col_a, layout.col_b, d, len(layout.bd_size), _block_minimum_degree(layout))
        state["block_symbolic"] = sym
    shift = state["shift"]
    while True:
        U, Dinv, bad_row = block_ldl_numeric(sym, S64a, S64b, shift, damping)
        u_max = finite_max_abs(U)
        if bad_row < 0 and math.isfinite(u_max) and math.isfinite(finite_max_abs(Dinv)):
            break
        shift = _next_shift(summary, shift, "Cholesky preconditioner")
    summary.ic_builds += 1
    state["shift"] = shift
    # power-of-two scale: largest |L_ij| at most 2^14, far below fp16's 65504, small entries above subnormals
    scale = power_of_two_scale(float(u_max), 2.0**14)
    pc.kind = K.PC_BLOCK_LDL
    pc.L_indptr, pc.L_indices = sym.indptr, sym.indices
    pc.L64 = U * scale
    pc.L_diag64 = Dinv
    pc.L_inv_scale = 1.0 / scale
    pc.L_block = sym.d
    if "scalar_perm" not in state:
        state["scalar_perm"] = sym.scalar_perm
    pc.L_perm = state["scalar_perm"]


def _block_minimum_degree(layout: "_Layout") -> np.ndarray:
    """Minimum-degree order of the free parameter blocks' graph (new position -> free block)."""
    nb = len(layout.bd_col)
    if nb <= 32:
        # fill is at most 32 x 32 blocks: the ordering (sparse matrix + SuperLU, ~0.2 ms) would cost more
        # than it saves (a quarter of a 9-pose graph's solve)
        return np.arange(nb, dtype=np.int64)
    a = np.searchsorted(layout.bd_col, layout.col_a)
    b = np.searchsorted(layout.bd_col, layout.col_b)
    keep = (layout.col_a >= 0) & (layout.col_b >= 0)
    # SPD stand-in with the block pattern: B + B^T + c I assembled in one COO (three sparse sums cost
    # more than the ordering itself on small graphs)
    ak, bk, m = a[keep], b[keep], int(keep.sum())
    diag = np.arange(nb)
    B = sp.csc_matrix((np.concatenate([np.full(2 * m, -1e-3), np.full(nb, 1.0 + 2e-3 * nb)]),
                       (np.concatenate([ak, bk, diag]), np.concatenate([bk, ak, diag]))), shape=(nb, nb))
    lu = spla.splu(B, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options=dict(SymmetricMode=True))
    border = np.empty(nb, dtype=np.int64)
    border[lu.perm_c] = np.arange(nb)
    return border


#: Below this many columns the small-problem direct solve is dense (:func:`kernels.dense_damped_normal_solve`).
SMALL_DENSE_COLUMNS = 96


def _small_direct_solve(layout, summary, S64a, S64b, rhs64, lam_s: float, state) -> tuple:
    """One LM step of a small problem: fp64 block L D L^T of ``S^T S + lam_s I`` (the "ict" block factor,
    its symbolic analysis kept in ``state``) and one direct solve; returns (y, 0 CG iterations, ok)."""
    t0 = time.perf_counter()
    if layout.n <= SMALL_DENSE_COLUMNS:
        # one numba call: dense assembly, Cholesky and solve (a few dozen columns)
        if "dense" not in state:
            state["dense"] = np.empty((layout.n, layout.n))
        y = np.empty(layout.n)
        ok = K.dense_damped_normal_solve(S64a, S64b, layout.col_a, layout.col_b, max(lam_s, 1e-300),
                                         np.ascontiguousarray(rhs64), state["dense"], y)
        summary.linear_solve_time_s += time.perf_counter() - t0
        if ok:
            return y, 0, True
        t0 = time.perf_counter()  # singular (Gauss-Newton on a gauge-free problem): the shifted block factor
    def build():
        pc = _Preconditioner(np.dtype(np.float64))
        _build_block_ict(summary, layout, S64a, S64b, state, pc, lam_s)
        return pc

    pc = _factor_of_this_system(state, "small_factor", lam_s, build)
    t1 = time.perf_counter()
    summary.preconditioner_time_s += t1 - t0
    summary.preconditioner_bytes = K.bytes_of(pc.L64, pc.L_diag64)
    y = np.empty(layout.n)
    block_ldl_direct_solve(pc.L_indptr, pc.L_indices, pc.L64, pc.L_diag64, int(pc.L_block), float(pc.L_inv_scale),
                           pc.L_perm, np.ascontiguousarray(rhs64), y)
    summary.linear_solve_time_s += time.perf_counter() - t1
    return y, 0, bool(np.all(np.isfinite(y)))


def _fp64_factor_operands(state, S64a, S64b, rhs, rhs64):
    """Operands of a solve after the factor was widened to fp64 (``SolverOptions.fp32_factor_max_cg_iterations``):
    fp64 mode's (fp64 J, vectors and right-hand side). The first such solve drops the fp32 factor; its
    replacement is built with no diagonal shift, as fp64 mode's (a breakdown still raises the shift)."""
    if not state.get("fp64_factor"):
        state["fp64_factor"] = True
        state["pc"] = None
        state["shift"] = state["ic_shift"] = 0.0
    return S64a, S64b, np.dtype(np.float64), np.asarray(rhs64 if rhs64 is not None else rhs, dtype=np.float64)


def _factor_of_this_system(state: dict, name: str, lam_s: float, build: Callable[[], object]):
    """The factor stored under ``name`` when it is of this linearisation and damping, else ``build()``'s
    (stored): the geodesic correction solves the step's system a second time."""
    key = (state.get("linearisation"), lam_s)
    cached = state.get(name)
    if cached is None or cached[0] != key:
        cached = state[name] = (key, build())
    return cached[1]


def _direct_solve(layout, S64a, S64b, rhs, lam_s: float, g: float, state: Optional[dict] = None) -> np.ndarray:
    """fp64 sparse direct solve of ``(S^T S + lam_s I) y = rhs`` (the baseline, and CG's fallback). With
    ``state`` (the solve's pc_state), a second solve of the same linearisation and damping reuses the factor."""
    def build():
        J = layout.jacobian_csr(S64a, S64b)
        A = (J.T @ J).tocsc() + sp.identity(layout.n, format="csc") * max(lam_s, 1e-12 * g * g)
        # SPD: SuperLU in symmetric mode without pivoting is an LDL^T (Cholesky) factorisation
        return spla.splu(A, permc_spec="MMD_AT_PLUS_A", diag_pivot_thresh=0.0, options=dict(SymmetricMode=True))

    lu = build() if state is None else _factor_of_this_system(state, "direct_factor", lam_s, build)
    return lu.solve(np.asarray(rhs, dtype=np.float64))


def _linear_solve(options, preset, layout, summary, S64a, S64b, Sa, Sb, rhs, lam_s, g, half, vec_dtype, bd64, tps,
                  state, rhs64=None):
    """Solve the scaled damped normal equations; returns (y, cg_iterations, ok-or-state).
    ``rhs64``: the fp64 right-hand side, for step refinement (``options.step_refinement``)."""
    t0 = time.perf_counter()
    if options.linear_solver == "cholesky":
        y = _direct_solve(layout, S64a, S64b, rhs, lam_s, g, state)
        summary.linear_solve_time_s += time.perf_counter() - t0
        return y, 0, bool(np.all(np.isfinite(y)))

    def run(Sa_, Sb_, storage, vdt, half_, max_iter=options.cg_max_iterations, b=None, rtol=None, step_rtol=None):
        b = rhs if b is None else b
        builds = summary.ic_builds
        rtol = options.cg_tolerance if rtol is None else rtol
        step_rtol = float(options.cg_step_tolerance or 0.0) if step_rtol is None else step_rtol
        pc = _build_preconditioner(options, preset, layout, summary, S64a, S64b, lam_s, bd64, state, storage, half_)
        summary.preconditioner_bytes = pc.nbytes
        t1 = time.perf_counter()
        y = np.empty(layout.n, dtype=vdt)
        stats = np.zeros(6)
        cu = state.get("cuda")
        on_device = cu is not None and not half_ and cu.supports(pc.kind)
        if cu is not None:
            state["cg_on"].add("cuda" if on_device else "cpu")
            if not on_device and "cpu note" not in state:
                state["cpu note"] = True
                summary.device_note += ("; " if summary.device_note else "") + (
                    "emulated-fp16 CG runs on the CPU" if half_ else "CG with a scalar IC/ict factor runs on the CPU")
        if on_device:
            its = cu.solve(Sa_, Sb_, np.ascontiguousarray(b, dtype=vdt), lam_s, pc, max_iter, rtol, step_rtol, y, stats)
        elif options.cgnr_kernel is not None and pc.kind in (K.PC_NONE, K.PC_BLOCK_JACOBI) and not half_:
            its = options.cgnr_kernel(Sa_, Sb_, layout.col_a, layout.col_b, np.ascontiguousarray(b, dtype=vdt),
                                      lam_s, pc.kind, pc.bd_vals, pc.bd_col, pc.bd_size, pc.bd_off,
                                      max_iter, rtol, y, stats)
        else:
            its = K.cgnr(Sa_, Sb_, layout.col_a, layout.col_b, np.ascontiguousarray(b, dtype=vdt), lam_s, pc.kind,
                         pc.bd_vals, pc.bd_col, pc.bd_size, pc.bd_off, pc.L_indptr, pc.L_indices, pc.L_vals,
                         pc.L_perm, pc.L_diag if pc.kind == K.PC_BLOCK_LDL else np.zeros(1, dtype=vdt), int(pc.L_block),
                         float(pc.L_inv_scale), max_iter, rtol, step_rtol, half_, y, stats)
        dt = time.perf_counter() - t1
        summary.linear_solve_time_s += dt
        summary.triangular_solve_time_s += stats[2] / tps
        summary.jacobian_product_time_s += stats[3] / tps
        if its > 0:
            state["cg_iteration_s"] = dt / its
        state["cg_unconverged"] = bool(its >= max_iter and stats[1] > rtol)
        state["fresh_factor_its"] = int(its) if summary.ic_builds > builds else None
        return y, int(its), stats[4] == 0.0

    # the factor's storage: the preset's, unless an fp16 factor was widened earlier in this solve (to
    # fp32, or on to fp64: then CG runs as fp64 mode's does, see SolverOptions.fp32_factor_max_cg_iterations)
    storage = state.get("factor_widened") or preset.preconditioner_storage
    if storage == "fp64" and preset.preconditioner_storage != "fp64":
        Sa, Sb, vec_dtype, rhs = _fp64_factor_operands(state, S64a, S64b, rhs, rhs64)
        summary.jacobian_bytes = K.bytes_of(Sa, Sb)  # CG now reads the fp64 J

    if (options.ic_damping_ratio and options.preconditioner in ("ic0", "ict") and state.get("pc") is not None
            and not half):
        floor = max(state["ic_shift"], 1e-300)
        now, built = max(state.get("lam", 0.0), floor), max(state.get("lam_built", 0.0), floor)
        if max(now / built, built / now) > options.ic_damping_ratio:
            state["pc"] = None  # LM's damping moved: a factor of the damped matrix at the new lambda
            summary.ic_damping_rebuilds += 1
    builds_before = summary.ic_builds
    t_cg = time.perf_counter()
    stale = (options.ic_stale_cg_budget and options.preconditioner in ("ic0", "ict") and state.get("pc") is not None
             and state.get("built_at") != state.get("linearisation") and state.get("cg_iteration_s", 0.0) > 0.0)
    if stale:
        # a factor from an earlier linearisation gets about one build's worth of CG iterations
        budget = max(options.ic_rebuild_cg_iterations, int(state["build_s"] / state["cg_iteration_s"]) + 1)
        stale = budget < options.cg_max_iterations
        if stale and state.get("stale_skips", 0) > 0:
            # old factors failed their budget at the last linearisations: rebuild at once (back-off)
            state["stale_skips"] -= 1
            state["pc"] = None
            stale = False
    if stale:
        y, its, ok = run(Sa, Sb, storage, vec_dtype, half, budget)
        if ok and its >= budget:
            state["pc"] = None  # rebuild at this linearisation and solve again
            y, its2, ok = run(Sa, Sb, storage, vec_dtype, half)
            its += its2
            # skip the next 1, 2, 4, 8 stale tries after as many failures in a row: where every LM step
            # moves the linearisation far (accelerated steps on long chains), the budget was spent for
            # nothing at every step (generated 100,000-pose SE(3) graph: 10 of every 14 CG iterations)
            state["stale_fails"] = state.get("stale_fails", 0) + 1
            state["stale_skips"] = min(2 ** (state["stale_fails"] - 1), 8)
            summary.ic_stale_failures += 1
        else:
            state["stale_fails"] = 0
    else:
        y, its, ok = run(Sa, Sb, storage, vec_dtype, half)
    if not ok and preset.fallback_to_fp32 and (preset.jacobian_storage == "fp16"
                                               or preset.preconditioner_storage == "fp16"):
        summary.fp16_fallbacks += 1
        y, its2, ok = run(S64a.astype(np.float32), S64b.astype(np.float32), "fp32", np.dtype(np.float32), False)
        its += its2
    fresh_its = state.get("fresh_factor_its")
    if (ok and storage == "fp16" and not half and options.fp16_factor_max_cg_iterations and fresh_its is not None
            and fresh_its > options.fp16_factor_max_cg_iterations):
        # a factor built for this very system still needed many CG iterations: its fp16 rounding, not its
        # age, limits CG (see SolverOptions.fp16_factor_max_cg_iterations); fp32 from here on
        state["factor_widened"] = "fp32"
        summary.factor_widened_at = summary.iterations
        storage = "fp32"
        state["pc"] = state["pc"].cast("fp32") if state.get("pc") is not None else None
        if state["pc"] is not None:
            state["pc"].storage = "fp32"
    elif (ok and storage == "fp32" and state.get("factor_widened") == "fp32" and not half
          and options.fp32_factor_max_cg_iterations and fresh_its is not None
          and fresh_its > options.fp32_factor_max_cg_iterations):
        # a fresh fp32 factor is still slow: its 1e-8 shift sits far above LM's lambda (see
        # SolverOptions.fp32_factor_max_cg_iterations); fp64 mode's factor from the next solve on
        state["factor_widened"] = "fp64"
        summary.factor_widened_to_fp64_at = summary.iterations
    if ok and state.get("cg_unconverged") and options.preconditioner in ("ic0", "ict") and not half:
        if summary.ic_builds == builds_before:
            # an older factor: one more try with a fresh one at this linearisation and lambda
            state["pc"] = None
            y, its2, ok = run(Sa, Sb, storage, vec_dtype, half)
            its += its2
    if options.direct_fallback and (not ok or state.get("cg_unconverged")) and not half:
        # CG cannot deliver this step: the fp64 direct solve does (counted and reported)
        t1 = time.perf_counter()
        y = _direct_solve(layout, S64a, S64b, rhs, lam_s, g).astype(vec_dtype)
        ok = bool(np.all(np.isfinite(y)))
        summary.direct_fallbacks += 1
        summary.linear_solve_time_s += time.perf_counter() - t1
        state["cg_unconverged"] = False
    elif (ok and rhs64 is not None and options.step_refinement and not half
          and (preset.jacobian_storage != "fp64" or preset.residual != "fp64")):
        # iterative refinement of the step against the fp64 system (see SolverOptions.step_refinement)
        y64 = y.astype(np.float64)
        q = np.empty(layout.m * len(layout.col_a))
        Ay = np.empty(layout.n)
        target = options.cg_tolerance * math.sqrt(_dot(rhs64, rhs64))
        for _ in range(int(options.step_refinement)):
            K.jtj_matvec(S64a, S64b, layout.col_a, layout.col_b, y64, q, Ay, False)
            res = rhs64 - Ay - lam_s * y64
            res_norm = math.sqrt(_dot(res, res))
            if not res_norm > target:
                break
            # the correction only has to bring the step's fp64 residual below the target, not to solve
            # for the correction to cg_tolerance (13 CG iterations per sweep on synth:se3:3000:0 with
            # mixed, where 1-3 do); the step-size test is for whole steps along near-null modes
            e, its2, ok2 = run(Sa, Sb, storage, vec_dtype, half, b=res.astype(vec_dtype),
                               rtol=min(0.5, max(options.cg_tolerance, 0.5 * target / res_norm)), step_rtol=0.0)
            its += its2
            summary.refinement_sweeps += 1
            if not ok2:
                break
            y64 += e.astype(np.float64)
        y = y64
    t_cg = time.perf_counter() - t_cg
    if (options.ic_rebuild_cg_iterations and options.preconditioner in ("ic0", "ict")
            and its > options.ic_rebuild_cg_iterations and t_cg > state.get("build_s", 0.0)):
        # the stale factor cost more CG time than a new one costs to build: rebuild it next iteration
        state["pc"] = None
    return y, its, ok
