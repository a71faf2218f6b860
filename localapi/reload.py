"""`--reload`: restart the server's process when the code it runs changes."""

import contextlib
import importlib.util
import logging
import os
from pathlib import Path

from uvicorn.supervisors.basereload import BaseReload
from uvicorn.supervisors.statreload import StatReload

logger = logging.getLogger("localapi")


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

    # The status `python -m localapi` exits with: 1 when the server's first process failed.
    exit_code = 0
    _reloaded = False
    _reported_exit = False

    def startup(self) -> None:
        self.reloader_name = "CodeReload"  # in uvicorn's "Started reloader process" line
        self.mtimes = self.scan()
        super().startup()

    def should_restart(self) -> list[Path] | None:
        self.pause()
        self._notice_an_exited_server()
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

    def _notice_an_exited_server(self) -> None:
        """The server's process ended by itself: it could not start (it said why).

        At the first start that ends the reloader too, with the process's status; after a
        reload the cause is most likely the code just saved, so the next save restarts it.
        """
        if self.process.is_alive() or self._reported_exit:
            return
        self._reported_exit = True
        if not self._reloaded:
            self.exit_code = self.process.exitcode or 1
            raise StopIteration
        logger.warning("The server stopped; it restarts at the next save of its code")

    def restart(self) -> None:
        self._reloaded, self._reported_exit = True, False
        # The new server process inherits it: a function that a save broke answers 502
        # while the others keep serving (`localapi.server.app_from_environment`).
        os.environ["LOCALAPI_RELOADED"] = "1"
        # Past StatReload's own, which would forget the times just taken.
        BaseReload.restart(self)

    def shutdown(self) -> None:
        if not self.exit_code:
            super().shutdown()
            return
        # Without uvicorn's "Stopping reloader" line: the server's own error stays the last.
        self.process.join()
        for sock in self.sockets:
            sock.close()

    def scan(self) -> dict[Path, float]:
        times = {}
        for file in self.iter_py_files():
            with contextlib.suppress(OSError):  # removed since the listing, or a dangling link
                times[file] = file.stat().st_mtime
        return times
