"""Safe file operations for folders that others may share or fill up (docs/reliability.md).

- :func:`append_line`: append one line to a log without following a symbolic link;
- :class:`FileLock`: an exclusive ``flock`` on a lock file opened without following a link;
- :func:`write_atomic`: a file written beside its place and renamed into it, so a reader
  (or a full disk) never leaves half a file under the real name;
- :func:`atomic_folder`: a whole output folder built beside its place and renamed into it,
  under a lock, so no mixed folder ever exists; it replaces only a folder it wrote itself
  (:data:`MARKER`), never the working folder or one holding the command's inputs;
- :func:`describe`: an ``OSError`` as one line (a full disk said as such).

Files are created with mode ``0o666`` and directories ``0o777``, less the umask (never
``tempfile``'s private ``0600``), so a group-shared folder stays shared. A link is refused
only as the last component of a path; folders above it are trusted (docs/reliability.md,
"Trust model"). Imports nothing from the rest of ``reuse``: the toolkit and the study both
use it. POSIX only (``fcntl``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
OUT_OF_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, an exhausted quota
MARKER = ".reuse-written"  # in a folder atomic_folder wrote: the names it wrote there, one a line


class SymlinkError(OSError):
    """A path that must be a plain file is a symbolic link: refused, its target untouched."""

    def __str__(self) -> str:
        return f"{self.filename} is a symbolic link: refused, not followed"


class FolderExistsError(FileExistsError):
    """An output folder that holds files (or is a file) and may not be replaced."""


def open_nofollow(path: str | os.PathLike, flags: int, mode: int = 0o666) -> int:
    """``os.open(path, flags | O_NOFOLLOW | O_CLOEXEC, mode)``: a file descriptor; raises
    :class:`SymlinkError` when ``path`` is a symbolic link (its target is not opened)."""
    try:
        return os.open(path, flags | _NOFOLLOW | _CLOEXEC, mode)
    except OSError as err:
        if err.errno == errno.ELOOP or (err.errno == errno.EMLINK and os.path.islink(path)):
            raise SymlinkError(errno.ELOOP, os.strerror(errno.ELOOP), os.fspath(path)) from None
        raise


def _write_all(fd: int, data: bytes | memoryview) -> None:
    """Every byte of ``data`` to ``fd`` (``os.write`` may write less than asked)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append ``line`` and a newline to ``path`` (created with the umask) in one write, so
    lines from concurrent processes do not interleave. Raises :class:`SymlinkError` for a
    link, leaving its target untouched."""
    fd = open_nofollow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        _write_all(fd, (line + "\n").encode())
    finally:
        os.close(fd)


class FileLock:
    """An exclusive ``fcntl.flock`` on ``path`` (created with the umask, kept afterwards),
    held inside ``with FileLock(path):``. A link is refused (:class:`SymlinkError`), so a
    lock can never create or truncate a file elsewhere. The lock belongs to the open file:
    two ``FileLock``s on one path exclude each other, in one process or in two."""

    def __init__(self, path: str | os.PathLike):
        self.path = os.fspath(path)
        self._fd: int | None = None

    def __enter__(self) -> FileLock:
        fd = open_nofollow(self.path, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor releases the lock


def write_bytes(path: str | os.PathLike, data: bytes | memoryview) -> None:
    """Write ``data`` to ``path`` (created with the umask, or truncated), not following a
    link; a full disk raises ``OSError(ENOSPC)``. Not atomic: see :func:`write_atomic`."""
    fd = open_nofollow(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _hidden_name(path: Path, what: str) -> Path:
    """``.NAME.WHAT-<pid>-<random>`` beside ``path``: unique per process and call."""
    return path.with_name(f".{path.name}.{what}-{os.getpid()}-{secrets.token_hex(4)}")


def write_atomic(path: str | os.PathLike, data: bytes | memoryview | str) -> None:
    """Write ``data`` (str as UTF-8) to a new hidden file beside ``path``, then rename it
    into place: ``path`` holds the old content or the new, never part of it. On any error
    (a full disk: ``OSError(ENOSPC)``) the hidden file is removed and the error raised."""
    path = Path(path)
    tmp = _hidden_name(path, "tmp")
    fd = open_nofollow(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        try:
            _write_all(fd, data.encode() if isinstance(data, str) else data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_folder(path: str | os.PathLike, force: bool = False,
                 inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """``path`` as an output folder: an absent or empty folder, or with ``force`` a folder
    that :func:`atomic_folder` wrote (its :data:`MARKER` names every entry in it). Raises
    :class:`FolderExistsError` for a file; for the working folder or a folder above it; for
    a folder that holds one of ``inputs`` (the paths the command reads); for a non-empty
    folder without ``force``; and, with ``force``, for a folder holding anything else, so
    ``force`` never removes a file it did not write. Returns the path with links resolved
    (what :func:`atomic_folder` replaces)."""
    path = Path(os.path.realpath(path))
    if path.exists() and not path.is_dir():
        raise FolderExistsError(f"{path} is a file, not a folder; allowed: a new or empty folder")
    cwd = Path(os.path.realpath(os.getcwd()))
    if path == cwd or path in cwd.parents:
        raise FolderExistsError(f"{path} is the working folder or a folder above it; allowed: a new or "
                                "empty folder that holds neither the working folder nor an input")
    held = [p for p in map(os.path.realpath, inputs) if _within(Path(p), path)]
    if held:
        raise FolderExistsError(f"{path} holds the input {held[0]}; allowed: a new or empty folder "
                                "that holds no input")
    entries = sorted(os.listdir(path)) if path.is_dir() else []
    if entries and not force:
        raise FolderExistsError(f"{path} is a folder that holds files; allowed: a new or empty "
                                "folder, or --force to replace one that this command wrote, whole")
    foreign = [e for e in entries if e not in _written(path)]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise FolderExistsError(f"{path} holds {shown}, which this command did not write: --force replaces "
                                "only a folder this command wrote; allowed: a new or empty folder")
    return path


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _written(folder: Path) -> set[str]:
    """The entries :data:`MARKER` in ``folder`` lists, and the marker itself; empty without one."""
    try:
        fd = open_nofollow(folder / MARKER, os.O_RDONLY)
    except (FileNotFoundError, SymlinkError):
        return set()
    with os.fdopen(fd, encoding="utf-8", errors="replace") as marker:
        return {*marker.read().splitlines(), MARKER}


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, force: bool = False,
                  inputs: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield a new, empty hidden folder beside ``path``; when the ``with`` block ends
    without error, write :data:`MARKER` into it, naming what the block wrote, and rename it
    to ``path`` under the lock file ``.NAME.lock`` beside it. ``path`` is checked by
    :func:`check_folder` (with ``force`` and ``inputs``) before and again under the lock.

    An absent or empty ``path`` is replaced by the rename itself; with ``force`` a full
    one (that this function wrote) is first renamed aside, then removed, so a reader sees
    the old folder or the new, never a mix, and a second writer that committed meanwhile is refused
    (:class:`FolderExistsError`, checked again under the lock) or, with ``force``,
    replaced whole. On an error the hidden folder is removed and ``path`` is unchanged;
    a process killed mid-way leaves ``path`` unchanged and a hidden ``.NAME.tmp-*``.
    """
    path = check_folder(path, force, inputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _hidden_name(path, "tmp")
    tmp.mkdir()  # 0o777 less the umask, unlike tempfile.mkdtemp's 0700
    try:
        yield tmp
        write_bytes(tmp / MARKER, "".join(f"{name}\n" for name in sorted(os.listdir(tmp))).encode())
        with FileLock(path.with_name(f".{path.name}.lock")):
            check_folder(path, force, inputs)
            aside = None
            if path.is_dir() and any(path.iterdir()):
                aside = _hidden_name(path, "old")
                os.rename(path, aside)
            try:
                os.rename(tmp, path)  # replaces an empty folder
            except OSError:
                if aside is not None:
                    os.rename(aside, path)
                raise
        if aside is not None:
            shutil.rmtree(aside, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def out_of_space(err: BaseException) -> bool:
    """Whether ``err`` is a full disk or an exhausted quota."""
    return isinstance(err, OSError) and err.errno in OUT_OF_SPACE


def describe(err: OSError, what: str) -> str:
    """One line for ``err`` met while writing ``what``: 'no space left on device' said as
    such, else the system's message and the file it names."""
    if out_of_space(err):
        return f"no space left on device while writing {what}"
    if isinstance(err, SymlinkError):
        return str(err)
    name = f" ({err.filename})" if err.filename and str(err.filename) not in what else ""
    return f"cannot write {what}: {err.strerror or err}{name}"
