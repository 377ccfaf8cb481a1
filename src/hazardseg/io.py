"""Atomic file output: write to a temporary file in the same folder, fsync, then ``os.replace``.

A crash (or SIGKILL) mid-write leaves either the previous file or none, never a half-written one
that a sweep report would read as valid. The temporary file is named after its writer
(``.<name>.<host>.<pid>.<random>.tmp``), so :func:`remove_stale_temp_files` can delete the ones a
killed writer left behind without touching a live writer's.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from hazardseg.errors import HazardsegError

_UMASK = os.umask(0)  # read once at import (os.umask can only be read by setting it)
os.umask(_UMASK)

HOST = socket.gethostname().split(".")[0].replace("~", "_") or "host"
_TEMP_NAME = re.compile(r"^\..+\.(?P<host>[^.]+)\.(?P<pid>\d+)\.[^.]+\.tmp$")
# A temporary file of a writer on another host (shared file system) is only removed once it is this
# old: no checkpoint or statistics write takes hours, and we cannot ask another host about its pid.
STALE_AFTER_S = 6 * 3600


# What a full disk looks like to a writer (EFBIG: a file-size limit, e.g. `ulimit -f`, or tests' fault injection).
NO_SPACE = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded", errno.EFBIG: "file size limit exceeded"}


class DiskFullError(HazardsegError, OSError):
    """A write failed for lack of space. One line naming the file; the previous file (if any) is intact. Also an
    OSError, so writers of optional files (caches) keep treating it as a warning."""

    def __str__(self) -> str:
        return self.strerror  # the message alone, without "[Errno 28]"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``. On any failure the
    temporary file is removed; a full disk is a :class:`DiskFullError` naming ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{HOST}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise_if_no_space(err, path)
        raise
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the final file normal permissions
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:  # RuntimeError: torch's zip writer, with the OSError as its context
        raise_if_no_space(err, path)
        raise
    finally:
        tmp.unlink(missing_ok=True)


def no_space_reason(err: BaseException | None) -> str | None:
    """"no space left on device" (or the quota / file-size variant) when ``err`` or an exception it was raised
    from is such an OSError; else None."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in NO_SPACE:
            return NO_SPACE[err.errno]
        err = err.__cause__ or err.__context__
    return None


def raise_if_no_space(err: BaseException, path: Path) -> None:
    if isinstance(err, DiskFullError):
        raise err
    reason = no_space_reason(err)
    if reason:
        raise DiskFullError(errno.ENOSPC, f"{path}: cannot write it ({reason}); nothing half-written is left and the "
                            f"previous file, if any, is intact. Fix: free space on the disk of {path.parent}, then re-run "
                            f"the same command (a training resumes from its last checkpoint)") from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    # Through a Python file: a failed write then raises an OSError with its errno (torch's own file writer only
    # says "unexpected pos"), which atomic_path turns into a DiskFullError when the disk is full.
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)


def remove_stale_temp_files(folder: str | os.PathLike, max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete ``.*.tmp`` files under ``folder`` whose writer is gone: a process of this host that no longer
    runs, or (other hosts, older naming) files older than ``max_age_s``. Returns the removed files."""
    removed = []
    for tmp in Path(folder).rglob(".*.tmp"):
        match = _TEMP_NAME.match(tmp.name)
        try:
            if match and match["host"] == HOST:
                stale = not pid_alive(int(match["pid"]))
            else:
                stale = time.time() - tmp.stat().st_mtime > max_age_s
            if stale and tmp.is_file():
                tmp.unlink()
                removed.append(tmp)
        except OSError:  # vanished meanwhile, or not ours to delete
            continue
    return removed


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def unwritable_reason(folder: str | os.PathLike) -> str | None:
    """Why files cannot be created in ``folder``, or None when they can. A folder that does not exist yet
    is judged by its nearest existing parent (nothing is created).

    Tries a real write rather than ``os.access``: that also catches read-only mounts and works for root."""
    folder = Path(folder).expanduser().absolute()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-test.", suffix=".probe"):
            pass
    except OSError as err:
        return err.strerror or type(err).__name__
    return None


def job_overrides(job_dir: Path) -> list[str]:
    """The command-line overrides of one multirun job (``<job>/.hydra/overrides.yaml``), unquoted; [] if none."""
    file = Path(job_dir) / ".hydra" / "overrides.yaml"
    if not file.is_file():
        return []
    return [line.removeprefix("- ").strip().strip("'\"") for line in file.read_text().splitlines() if line.startswith("- ")]
