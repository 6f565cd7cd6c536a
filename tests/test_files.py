"""runtime.files: atomic writes leave the mode a plain open()/mkdir() would, so other accounts can read outputs."""

import os
import stat

import pytest

from runtime.files import atomic_dir, atomic_path, atomic_write, current_umask


@pytest.fixture
def umask():
    def set_to(value: int) -> None:
        os.umask(value)

    old = os.umask(0o022)
    yield set_to
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
def test_atomic_files_and_dirs_get_the_umask_mode(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    plain_file, plain_dir = tmp_path / "plain.txt", tmp_path / "plain_dir"
    plain_file.write_text("x")
    plain_dir.mkdir()
    assert mode(atomic_write(tmp_path / "a.json", "{}")) == mode(plain_file) == 0o666 & ~mask
    with atomic_path(tmp_path / "b.png") as tmp:
        tmp.write_bytes(b"png")
    assert mode(tmp_path / "b.png") == 0o666 & ~mask
    with atomic_dir(tmp_path / "engines") as d:
        (d / "manifest.json").write_text("{}")
        (d / "onnx").mkdir(mode=0o700)
        os.close(os.open(d / "onnx" / "unet.onnx.data", os.O_CREAT | os.O_WRONLY, 0o600))  # as ONNX's saver does
    assert mode(tmp_path / "engines") == mode(plain_dir) == 0o777 & ~mask
    assert mode(tmp_path / "engines" / "onnx") == 0o777 & ~mask
    assert mode(tmp_path / "engines" / "onnx" / "unet.onnx.data") == mode(plain_file) == 0o666 & ~mask


def test_a_replaced_file_or_dir_keeps_its_own_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "shared.json"
    target.write_text("old")
    os.chmod(target, 0o664)
    atomic_write(target, "new")
    assert target.read_text() == "new" and mode(target) == 0o664
    folder = tmp_path / "out"
    folder.mkdir()
    os.chmod(folder, 0o775)
    with atomic_dir(folder, replace=True) as d:
        (d / "f").write_text("1")
    assert mode(folder) == 0o775 and (folder / "f").read_text() == "1"


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_atomic_dir_keeps_the_modes_set_on_purpose(tmp_path, umask, mask):
    """Only owner-only modes (a writer's private temporary mode) are widened; an executable keeps its x bits, a file
    copied from the old dir keeps the mode it had there (as `export.build --components` copies them)."""
    import shutil

    umask(0o022)
    old = tmp_path / "engines"
    with atomic_dir(old) as d:
        for name, bits in (("run.sh", 0o750), ("shared.onnx", 0o640), ("private.bin", 0o600)):
            (d / name).write_text(name)
            os.chmod(d / name, bits)
    os.chmod(old / "private.bin", 0o600)  # made private by its owner after the build
    assert mode(old / "run.sh") == 0o750 and mode(old / "shared.onnx") == 0o640
    umask(mask)
    with atomic_dir(old, replace=True) as d:
        shutil.copytree(old, d, dirs_exist_ok=True)  # the components kept from the old dir
        (d / "tool").write_text("#!/bin/sh\n")
        os.chmod(d / "tool", 0o755)  # chmod +x
        os.close(os.open(d / "helper", os.O_CREAT | os.O_WRONLY, 0o700))  # an owner-only executable
        os.close(os.open(d / "unet.onnx.data", os.O_CREAT | os.O_WRONLY, 0o600))  # as ONNX's saver does
    assert mode(old / "run.sh") == 0o750 and mode(old / "shared.onnx") == 0o640, "copied from the old dir: kept"
    assert mode(old / "private.bin") == 0o600, "owner-only in the old dir too: kept private"
    assert mode(old / "tool") == 0o755, "set on purpose: kept"
    assert mode(old / "helper") == 0o777 & ~mask, "an owner-only executable: widened, executable"
    assert mode(old / "unet.onnx.data") == 0o666 & ~mask, "a writer's private file: the plain mode"


def test_a_killed_writers_temporary_dir_is_removed_by_the_next_write_of_the_same_dest(tmp_path):
    """A build killed (OOM, Ctrl-C twice) leaves its hidden temporary dir, ~10 GB at real size; the next atomic_dir
    for the same dest removes those whose process is gone on this host, and nothing else."""
    import socket
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    host = socket.gethostname()
    leftovers = {
        "abandoned": tmp_path / f".engines.{host}~{pid}~abc123.tmp",
        "live": tmp_path / f".engines.{host}~{os.getpid()}~def456.tmp",
        "other host": tmp_path / f".engines.another-node~{pid}~ghi789.tmp",
        "other dest": tmp_path / f".engines-fp16.{host}~{pid}~jkl012.tmp",
        "older naming": tmp_path / ".engines.mno345.tmp",
    }
    for path in leftovers.values():
        (path / "onnx").mkdir(parents=True)
        (path / "onnx" / "unet.onnx").write_bytes(b"x")
    with atomic_dir(tmp_path / "engines") as tmp:
        assert tmp.name.startswith(f".engines.{host}~{os.getpid()}~") and tmp.name.endswith(".tmp")
        (tmp / "manifest.json").write_text("{}")
    assert not leftovers["abandoned"].exists()
    assert all(p.exists() for k, p in leftovers.items() if k != "abandoned")
    assert (tmp_path / "engines" / "manifest.json").is_file()
