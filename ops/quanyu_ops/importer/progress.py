"""What a load tells the person running it: rejected rows as they are found, a progress bar on a
terminal for large files, and the closing tally."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

from quanyu_ops.importer.formats import CsvTable, line_label
from quanyu_ops.importer.rows import Problem

EXIT_LOADED, EXIT_REJECTED, EXIT_FAILED = 0, 1, 2
# Below this many rows a load takes a moment and a progress bar is only noise.
PROGRESS_MIN_ROWS = 5000


class Report:
    """Rejected rows, written as they are found, and the tally for the closing summary."""

    def __init__(self, out: TextIO) -> None:
        # How a row's position is named: "line 17" for CSV, "features[16]" for GeoJSON.
        self.label: Callable[[int], str] = line_label
        self._out = out
        self.loaded = 0
        self.rejected: set[int] = set()

    def reject(self, problems: Iterable[Problem]) -> None:
        for problem in sorted(problems, key=lambda p: p.position):
            self.rejected.add(problem.position)
            where = self.label(problem.position)
            subject = f"{where}: {problem.field}" if problem.field else where
            # Through tqdm, so a progress bar on the terminal is cleared first and redrawn after.
            tqdm.write(f"{subject}: {problem.description}", file=self._out)

    def summary(self, noun: str) -> str:
        line = f"{noun}: {self.loaded:,} loaded, {len(self.rejected):,} rejected"
        return f"{line} (see above)" if self.rejected else line

    @property
    def started(self) -> bool:
        return bool(self.loaded or self.rejected)

    @property
    def exit_code(self) -> int:
        return EXIT_REJECTED if self.rejected else EXIT_LOADED


Progress = Callable[[int], tqdm]


def progress_bar(err: TextIO) -> Progress:
    """A progress bar of so many rows, on `err` when it is a terminal and the file is large."""

    def bar(total: int) -> tqdm:
        return tqdm(
            total=total,
            unit=" rows",
            file=err,
            disable=total < PROGRESS_MIN_ROWS or not err.isatty(),
            dynamic_ncols=True,
        )

    return bar


def warn_ignored(path: Path, table: CsvTable) -> None:
    if table.ignored:
        tqdm.write(f"{path}: ignoring column(s) {', '.join(table.ignored)}", file=sys.stderr)
