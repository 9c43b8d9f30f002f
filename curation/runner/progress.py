"""Live progress bars per stage (shards and samples) and the end-of-run stats table."""
from __future__ import annotations

import sys
import time
from typing import Any, Callable

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class StageProgress:
    """``factory(stage_name)`` returns the ``progress(done, total, samples)`` callback of a stage.

    On a terminal it draws a live bar per stage; otherwise it prints a line at most every
    few seconds (logs of Ray Jobs, CI).
    """

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("shards · {task.fields[samples]} samples"), TimeElapsedColumn(),
                                 console=self.console, transient=False) if self.live else None
        self._last = 0.0

    def __enter__(self) -> "StageProgress":
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.progress:
            self.progress.stop()

    def __call__(self, stage: str) -> Callable[[int, int, int], None]:
        task = self.progress.add_task(stage, total=None, samples=0) if self.progress else None
        total_samples = [0]

        def update(done: int, total: int, samples: int) -> None:
            total_samples[0] += samples
            if self.progress is not None and task is not None:
                self.progress.update(task, completed=done, total=total, samples=total_samples[0])
            elif time.time() - self._last > 5 or done == total:
                self._last = time.time()
                print(f"[{stage}] {done}/{total} shards, {total_samples[0]} samples", file=sys.stderr, flush=True)

        return update


def stats_table(record: dict[str, Any]) -> Table:
    """The per-stage stats of a run record as a table."""
    t = Table(title=f"run {record.get('pipeline')}")
    for c in ("stage", "in", "out", "dropped", "seconds", "samples/s", "version"):
        t.add_column(c)
    for s in record.get("stages", []):
        st = s.get("stats") or {}
        dropped = ", ".join(f"{k}={v}" for k, v in sorted((st.get("dropped") or {}).items()))
        t.add_row(s["name"], str(st.get("samples_in", "")), str(st.get("samples_out", "")), dropped,
                  str(st.get("seconds", "")), str(st.get("samples_per_s", "")), str(s.get("version", "")))
    return t
