"""Private files: data directories 0700, and the files that hold secrets 0600, for masters and agents.

What is private: a master's data directory (the Raft journal and dump hold every agent's push token and
the sealed secrets) and its cluster secret file; an agent's data directory (its push token, and the
last desired set with plain secret values) and its token file.

Two measures, both at start-up, before anything is opened or written:
- `private_umask()` sets the process umask to 0o077, so every file and directory the process creates
  afterwards (PySyncObj's journal and dump included, which orca does not open itself) is owner-only.
- `secure_paths()` checks what already exists: a data directory looser than 0700 or a file in it (or a
  secret file) looser than 0600 is tightened, with a warning naming the path and both modes. A path the
  process cannot tighten (another owner, a read-only mount) stops the start (`FileModeError`): running
  on with a secret that others can read is worse than not starting.

Only the data directory's own entries are checked, not a tree walk, and symbolic links are never
followed (a link could point the chmod at a file that is not ours).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path

__all__ = ["private_umask", "secure_paths", "FileModeError", "DIR_MODE", "FILE_MODE"]

DIR_MODE = 0o700
FILE_MODE = 0o600
UMASK = 0o077

log = logging.getLogger("orca.files")


class FileModeError(Exception):
    """A private path that is open to others and cannot be tightened."""


def private_umask() -> int:
    """Make everything this process creates from now on owner-only; returns the previous umask."""
    return os.umask(UMASK)


def _tighten(path: Path, mode: int, kind: str) -> str | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return None
    current = stat.S_IMODE(st.st_mode)
    if current & ~mode & 0o777 == 0:
        return None
    wanted = current & mode
    try:
        os.chmod(path, wanted)
    except OSError as err:
        raise FileModeError(f"{kind} {path} has mode {current:04o} and cannot be made {mode:04o}: "
                            f"{err.strerror or err}") from None
    message = f"{kind} {path} had mode {current:04o}, readable by others: tightened to {wanted:04o}"
    log.warning("%s", message)
    return message


def secure_paths(data_dirs: Iterable[Path], secret_files: Iterable[Path] = ()) -> list[str]:
    """Tighten each data directory to 0700 and every file in it, and each secret file, to 0600.

    Creates a missing data directory (0700). Returns the warnings it logged (empty when all was
    private); raises `FileModeError` for a path it cannot tighten.
    """
    warnings: list[str] = []
    for directory in data_dirs:
        directory = Path(directory)
        directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        if (w := _tighten(directory, DIR_MODE, "data directory")) is not None:
            warnings.append(w)
        for entry in sorted(directory.iterdir()):
            kind_mode = (DIR_MODE, "directory") if entry.is_dir() and not entry.is_symlink() else (FILE_MODE, "file")
            if (w := _tighten(entry, kind_mode[0], kind_mode[1])) is not None:
                warnings.append(w)
    for path in secret_files:
        if (w := _tighten(Path(path), FILE_MODE, "secret file")) is not None:
            warnings.append(w)
    return warnings
