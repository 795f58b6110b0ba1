"""The command line's progress: a tqdm bar on stderr fed by a long job's typed events (prune, sweep, repair)."""
from __future__ import annotations

import sys
from typing import Any

from ..core.events import Event


class EventBar:
    """Subclasses say in `show` what each kind of event does to the bar; quiet: nothing is shown."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar = quiet, None

    def __call__(self, event: Event) -> None:
        if not self.quiet:
            self.show(event)

    def show(self, event: Event) -> None:
        raise NotImplementedError

    def line(self, event: Event, text: str) -> None:
        """One line above the bar, stamped with the job's elapsed time."""
        from tqdm import tqdm

        tqdm.write(f"[{event.elapsed_s:7.1f}s] {text}", file=sys.stderr)

    def started(self, total: int, unit: str, desc: str) -> Any:
        """The bar, opened on first use."""
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr)
        return self.bar

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
