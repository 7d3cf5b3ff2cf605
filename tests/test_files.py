"""reuse.toolkit.files: links refused, the umask followed, locks that exclude, atomic files and
folders, a full disk said in one line."""
from __future__ import annotations

import ast
import errno
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import fill

from reuse.toolkit import files


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _victim(tmp_path: Path) -> tuple[Path, bytes]:
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious\n")
    return victim, victim.read_bytes()


def test_append_line_appends_and_refuses_a_link(tmp_path):
    log = tmp_path / "a.log"
    files.append_line(log, "one")
    files.append_line(log, "two")
    assert log.read_text() == "one\ntwo\n"
    victim, before = _victim(tmp_path)
    (tmp_path / "link.log").symlink_to(victim)
    with pytest.raises(files.SymlinkError, match="link.log.*symbolic link"):
        files.append_line(tmp_path / "link.log", "evil")
    assert victim.read_bytes() == before


def test_lock_refuses_a_link_and_leaves_its_target(tmp_path):
    victim, before = _victim(tmp_path)
    (tmp_path / "x.lock").symlink_to(victim)
    with pytest.raises(files.SymlinkError, match="x.lock"):
        with files.FileLock(tmp_path / "x.lock"):
            pass
    assert victim.read_bytes() == before
    (tmp_path / "dangling.lock").symlink_to(tmp_path / "nowhere")
    with pytest.raises(files.SymlinkError):
        with files.FileLock(tmp_path / "dangling.lock"):
            pass
    assert not (tmp_path / "nowhere").exists()  # a dangling link creates nothing


TRY_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
except BlockingIOError:
    sys.exit(1)
"""


def test_lock_excludes_another_process(tmp_path):
    path = tmp_path / "x.lock"
    other = [sys.executable, "-c", TRY_LOCK, str(path)]
    with files.FileLock(path):
        assert subprocess.run(other).returncode == 1
    assert subprocess.run(other).returncode == 0
    assert path.exists()  # kept: removing a lock file races with its next user


@pytest.mark.parametrize("umask", [0o002, 0o077])
def test_created_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        files.append_line(tmp_path / "a.log", "x")
        with files.FileLock(tmp_path / "a.lock"):
            pass
        files.write_atomic(tmp_path / "a.json", "{}")
        with files.atomic_folder(tmp_path / "out") as tmp:
            (tmp / "f.txt").write_text("x")
    finally:
        os.umask(old)
    for name in ("a.log", "a.lock", "a.json", "out/f.txt"):
        assert _mode(tmp_path / name) == 0o666 & ~umask, name
    assert _mode(tmp_path / "out") == 0o777 & ~umask


def test_write_atomic_on_a_full_disk_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "fig.svg"
    files.write_atomic(path, b"old")
    monkeypatch.setattr(files, "_write_all", _enospc)
    with pytest.raises(OSError) as caught:
        files.write_atomic(path, b"new" * 1000)
    assert files.out_of_space(caught.value)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["fig.svg"]


def test_write_atomic_on_a_real_full_disk(tiny_disk):
    fill(tiny_disk, leave=8192)
    files.write_atomic(tiny_disk / "small", b"x" * 100)
    with pytest.raises(OSError) as caught:
        files.write_atomic(tiny_disk / "big", b"x" * 200_000)
    assert files.out_of_space(caught.value)
    assert sorted(os.listdir(tiny_disk)) == [".filler", "small"]


def test_atomic_folder_new_and_refusals(tmp_path):
    with files.atomic_folder(tmp_path / "out") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-")
        (tmp / "a.csv").write_text("a")
    assert sorted(os.listdir(tmp_path / "out")) == [files.MARKER, "a.csv"]
    with pytest.raises(files.FolderExistsError, match="holds files.*--force"):
        with files.atomic_folder(tmp_path / "out"):
            pytest.fail("entered for a non-empty folder")
    (tmp_path / "file").write_text("x")
    with pytest.raises(files.FolderExistsError, match="is a file"):
        with files.atomic_folder(tmp_path / "file", force=True):
            pytest.fail("entered for a file")
    (tmp_path / "empty").mkdir()
    with files.atomic_folder(tmp_path / "empty") as tmp:
        (tmp / "b.csv").write_text("b")
    assert sorted(os.listdir(tmp_path / "empty")) == [files.MARKER, "b.csv"]
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]


def test_atomic_folder_force_replaces_whole_and_an_error_changes_nothing(tmp_path):
    out = tmp_path / "out"
    with files.atomic_folder(out) as tmp:
        (tmp / "swaps.csv").write_text("old")
    with pytest.raises(RuntimeError):
        with files.atomic_folder(out, force=True) as tmp:
            (tmp / "layers.csv").write_text("new")
            raise RuntimeError("killed between two files")
    assert sorted(os.listdir(out)) == [files.MARKER, "swaps.csv"]
    with files.atomic_folder(out, force=True) as tmp:
        (tmp / "layers.csv").write_text("new")
    assert sorted(os.listdir(out)) == [files.MARKER, "layers.csv"]  # no file of the old run is left
    assert sorted(os.listdir(tmp_path)) == [".out.lock", "out"]


def test_force_replaces_only_a_folder_it_wrote_and_never_a_file_it_did_not(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("precious")
    with pytest.raises(files.FolderExistsError, match="holds mine.txt, which this command did not write"):
        with files.atomic_folder(out, force=True):
            pytest.fail("entered for a folder it did not write")
    (out / "mine.txt").unlink()
    with files.atomic_folder(out, force=True) as tmp:
        (tmp / "report.md").write_text("first")
    (out / "notes.txt").write_text("added by hand")  # beside a report it wrote
    with pytest.raises(files.FolderExistsError, match="holds notes.txt, which"):
        files.check_folder(out, force=True)
    (out / "notes.txt").unlink()
    assert files.check_folder(out, force=True) == out


def test_the_working_folder_its_parents_and_folders_holding_inputs_are_refused(tmp_path, monkeypatch):
    work = tmp_path / "ckpts"
    (work / "sub").mkdir(parents=True)
    (work / "source.pt").write_bytes(b"weights")
    monkeypatch.chdir(work)
    for out in (".", "..", str(tmp_path), "/"):
        with pytest.raises(files.FolderExistsError, match="is the working folder or a folder above it"):
            files.check_folder(out, force=True)
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    with pytest.raises(files.FolderExistsError, match=f"holds the input {work / 'source.pt'}"):
        files.check_folder("../ckpts", force=True, inputs=["../ckpts/source.pt"])
    with pytest.raises(files.FolderExistsError, match="holds the input"):  # the input itself
        files.check_folder(work / "sub" / "x", force=True, inputs=[work / "sub" / "x"])
    assert files.check_folder(work / "sub", inputs=[work / "source.pt"]) == work / "sub"
    assert sorted(os.listdir(work)) == ["source.pt", "sub"]


@pytest.mark.parametrize("force", [False, True])
def test_a_writer_that_committed_meanwhile_is_refused_or_replaced_whole(tmp_path, force):
    out = tmp_path / "out"
    with pytest.raises(files.FolderExistsError) if not force else _nothing():
        with files.atomic_folder(out, force=force) as first:
            (first / "report.md").write_text("first")
            (first / "swaps.csv").write_text("first")
            with files.atomic_folder(out, force=force) as second:  # finishes while the first writes
                (second / "report.md").write_text("second")
    winner = "first" if force else "second"
    assert {p.name: p.read_text() for p in out.iterdir() if p.name != files.MARKER} == {
        "report.md": winner, **({"swaps.csv": "first"} if force else {})}
    assert not [p for p in os.listdir(tmp_path) if ".tmp-" in p or ".old-" in p]


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_describe_says_a_full_disk_in_one_line(tmp_path):
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x"))
    assert files.describe(full, "layers.csv") == "no space left on device while writing layers.csv"
    assert files.out_of_space(OSError(errno.EDQUOT, "quota"))
    other = files.describe(PermissionError(errno.EACCES, "Permission denied", "/x/y"), "the report")
    assert other == "cannot write the report: Permission denied (/x/y)" and "\n" not in other


def test_files_imports_nothing_from_the_rest_of_reuse():
    tree = ast.parse(Path(files.__file__).read_text())
    imported = [n.module or "." for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and
                (n.level or (n.module or "").startswith("reuse"))]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names
                 if a.name.startswith("reuse")]
    assert not imported
