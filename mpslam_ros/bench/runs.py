"""The run loop shared by the pipeline benchmarks: one row per job, a progress bar, JSON lines."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, List, Optional, Sequence


def run_jobs(jobs: Sequence[tuple], run: Callable[..., dict], desc: str, out: Optional[str] = None,
             labels: Sequence[str] = ()) -> List[dict]:
    """``run(*job)`` for every job, in order, under a tqdm bar named ``desc`` (the job's fields shown
    as ``labels``); each row is appended to the JSON-lines file ``out`` as soon as it exists, so an
    interrupted benchmark keeps the rows it finished."""
    from tqdm import tqdm

    rows = []
    with tqdm(total=len(jobs), desc=desc, unit="run") as bar:
        for job in jobs:
            bar.set_postfix(dict(zip(labels, job)))
            row = run(*job)
            rows.append(row)
            if out:
                with open(Path(out), "a") as fh:
                    fh.write(json.dumps(row) + "\n")
            bar.update(1)
    return rows
