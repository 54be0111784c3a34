"""Written files and folders follow the umask, as every other program's do."""

from __future__ import annotations

import os
import stat

import pytest

from peftlab.io import replace_folder, write_json


@pytest.fixture(params=[0o022, 0o077])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_and_folders_are_written_with_the_umask(tmp_path, umask):
    write_json(tmp_path / "results.json", {"a": 1})
    assert _mode(tmp_path / "results.json") == 0o666 & ~umask

    with replace_folder(tmp_path / "adapter") as folder:
        write_json(folder / "adapter_config.json", {"r": 8})
    assert _mode(tmp_path / "adapter") == 0o777 & ~umask
    assert _mode(tmp_path / "adapter" / "adapter_config.json") == 0o666 & ~umask
