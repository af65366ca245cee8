"""One training per run folder: an exclusive lock on ``run_dir/.lock``, held by rank 0 for the whole run.

flock locks belong to the open file, so the kernel drops them when the process dies however it dies (SIGKILL, a
node crash on the same host): a lock file left behind by a dead run never blocks the next one. On NFS, Linux maps
flock to the server's byte-range locks, which also end with their holder.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path


class RunFolderInUseError(RuntimeError):
    """Another live process trains in this run folder."""


class RunLock:
    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / ".lock"
        self._handle = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 - held open for the lifetime of the run
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise RunFolderInUseError(
                f"run folder {str(self.path.parent)!r} is in use by a training that is still running ({holder}): "
                "two runs in one folder overwrite each other's checkpoints -- wait for it, stop it, or give this "
                "run another name= (or run_dir=)"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.ctime()}) + "\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
