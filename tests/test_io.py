"""peftlab.io: folders replaced as one unit (a kill at any point leaves the old or the new folder),
names that stay inside their folder, loaded tensors checked, output folders checked early."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from peftlab.errors import PeftlabError
from peftlab.io import check_writable_folder, child_path, recover_folder, replace_folder, tensor_problem


def make_folder(path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def contents(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): p.read_text() for p in sorted(path.rglob("*")) if p.is_file()}


OLD = {"adapter.txt": "old", "metrics.json": "old", "checkpoints/step-2/state.json": "kept", "notes.md": "mine"}
NEW = {"adapter.txt": "new", "metrics.json": "new"}
UNIT = {"adapter.txt", "metrics.json"}


def write_new(folder: Path) -> None:
    make_folder(folder, NEW)


def test_the_new_folder_replaces_the_unit_and_keeps_the_rest(tmp_path):
    out = make_folder(tmp_path / "out", OLD)
    with replace_folder(out, carry=lambda entry: entry.name not in UNIT) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".out.tmp-")
        write_new(temporary)
    assert contents(out) == {**NEW, "checkpoints/step-2/state.json": "kept", "notes.md": "mine"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temporaries left


def test_a_failed_write_leaves_the_old_folder(tmp_path):
    out = make_folder(tmp_path / "out", OLD)
    with pytest.raises(RuntimeError):
        with replace_folder(out, carry=lambda entry: entry.name not in UNIT) as temporary:
            write_new(temporary)
            raise RuntimeError("disk full")
    assert contents(out) == OLD
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _killed_at(tmp_path: Path, monkeypatch, rename_number: int) -> None:
    """Run replace_folder in a forked child that dies (os._exit: no cleanup, like SIGKILL) right
    before its `rename_number`-th rename; -1 dies while the new files are being written."""
    out = tmp_path / "out"
    pid = os.fork()
    if pid == 0:  # the child
        try:
            renames = []
            original = Path.rename

            def rename(self, target):
                if len(renames) == rename_number:
                    os._exit(0)
                renames.append(target)
                return original(self, target)

            monkeypatch.setattr(Path, "rename", rename)
            with replace_folder(out, carry=lambda entry: entry.name not in UNIT) as temporary:
                make_folder(temporary, {"adapter.txt": "new"})
                if rename_number == -1:
                    os._exit(0)
                make_folder(temporary, {"metrics.json": "new"})
        finally:
            os._exit(0)
    os.waitpid(pid, 0)


@pytest.mark.parametrize("rename_number", [-1, 0, 1, 2, 3, 4])  # carried: checkpoints, notes.md; then the swap
def test_a_kill_at_any_point_leaves_the_old_or_the_new_folder_and_the_next_run_cleans_up(
        tmp_path, monkeypatch, rename_number):
    out = make_folder(tmp_path / "out", OLD)
    _killed_at(tmp_path, monkeypatch, rename_number)
    if out.exists():  # what a reader sees right after the kill: never a mix
        unit = {name: text for name, text in contents(out).items() if name in UNIT}
        assert unit in ({"adapter.txt": "old", "metrics.json": "old"}, NEW)
    recover_folder(out)  # what the next run does first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    final = contents(out)
    assert final in (OLD, {**NEW, "checkpoints/step-2/state.json": "kept", "notes.md": "mine"})
    assert final == OLD if rename_number < 3 else final["adapter.txt"] == "new"  # the swap is finished


def test_a_folder_holding_the_current_directory_or_a_file_is_refused(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PeftlabError, match="is a file"):
        with replace_folder(tmp_path / "file"):
            pass
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PeftlabError, match="holds the current directory"):
        with replace_folder(tmp_path):
            pass


def test_output_folders_are_checked_before_any_work(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PeftlabError, match="--out .*file is an existing file"):
        check_writable_folder(tmp_path / "file", "--out")
    with pytest.raises(PeftlabError, match="is a file, so no folder can be made below it"):
        check_writable_folder(tmp_path / "file" / "below", "--out")
    with pytest.raises(PeftlabError, match="cannot be written"):
        check_writable_folder("/sys/peftlab-cannot-write-here", "--out")  # read-only even for root
    assert check_writable_folder(tmp_path / "new" / "run", "--out") == tmp_path / "new" / "run"
    assert not (tmp_path / "new" / "run").exists() and list((tmp_path / "new").iterdir()) == []


@pytest.mark.parametrize("name", ["../outside", "/abs/path", "a/b", ".", "..", "", ".hidden", "x:y", 5, None, ["a"]])
def test_names_read_from_files_must_be_plain(tmp_path, name):
    with pytest.raises(PeftlabError, match="is not a plain name"):
        child_path(tmp_path, name, "component folder")


def test_a_link_out_of_the_folder_is_refused_and_one_inside_is_not(tmp_path):
    folder = tmp_path / "folder"
    (folder / "inside").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (folder / "out_link").symlink_to(tmp_path / "outside")
    (folder / "in_link").symlink_to(folder / "inside")
    with pytest.raises(PeftlabError, match="is a link that leads out of"):
        child_path(folder, "out_link", "component folder")
    assert child_path(folder, "in_link", "component folder") == folder / "in_link"


@pytest.mark.parametrize("tensor, problem", [
    (torch.ones(3), None),
    (torch.ones(3, dtype=torch.float16), None),
    (torch.ones(3, dtype=torch.bfloat16), None),
    (torch.ones(3, dtype=torch.float8_e4m3fn), None),
    (torch.tensor([1.0, float("nan")]), "tensor 'w' holds NaN or infinite values"),
    (torch.tensor([1.0, float("-inf")], dtype=torch.float16), "tensor 'w' holds NaN or infinite values"),
    (torch.ones(3, dtype=torch.int8), "tensor 'w' is int8, weights must be floating point"),
    (torch.ones(3, dtype=torch.bool), "tensor 'w' is bool, weights must be floating point"),
])
def test_tensor_problem_names_the_tensor(tensor, problem):
    assert tensor_problem({"w": tensor}) == problem
