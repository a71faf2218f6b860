"""`--reload`: restart the server's process when the code it runs changes."""

import contextlib
import importlib.util
import os
from pathlib import Path

from uvicorn.supervisors.basereload import BaseReload
from uvicorn.supervisors.statreload import StatReload


class CodeReload(StatReload):
    """uvicorn's polling reloader, with two ways of missing a save closed.

    - StatReload records the files' times on its first scan, a `reload_delay` after it has
      started the server's process, and forgets them at each restart. A save in between
      became the baseline and never reloaded. Here the times are taken before the process
      starts, and the scan that finds a change is the next baseline.
    - Python trusts cached bytecode whose source has the same size and the same whole second
      of modification. A same-size edit (a changed digit) saved in the second of the last
      import served the old code after the restart, so the changed files' `.pyc` goes first.

    It also restarts when a module is added or removed, which StatReload ignores.
    """

    def startup(self) -> None:
        self.reloader_name = "CodeReload"  # in uvicorn's "Started reloader process" line
        self.mtimes = self.scan()
        super().startup()

    def should_restart(self) -> list[Path] | None:
        self.pause()
        times = self.scan()
        files = times.keys() | self.mtimes.keys()
        changed = sorted(file for file in files if times.get(file) != self.mtimes.get(file))
        if not changed:
            return None
        self.mtimes = times
        for file in changed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(importlib.util.cache_from_source(str(file)))
        return changed

    def restart(self) -> None:
        # Past StatReload's own, which would forget the times just taken.
        BaseReload.restart(self)

    def scan(self) -> dict[Path, float]:
        times = {}
        for file in self.iter_py_files():
            with contextlib.suppress(OSError):  # removed since the listing, or a dangling link
                times[file] = file.stat().st_mtime
        return times
