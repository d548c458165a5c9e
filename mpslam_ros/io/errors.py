"""The one error type for unreadable data files and folders (dataset readers, trajectories, bags)."""

from __future__ import annotations

import os
from typing import Optional


class DataError(ValueError):
    """Bad input data: names the file (and line, when known) and what is wrong with it."""

    def __init__(self, path: "str | os.PathLike", reason: str, line: Optional[int] = None):
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {reason}")
