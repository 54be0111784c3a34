"""Files and folders at the boundary: atomic writes, whole-folder swaps, contained paths, checked tensors.

Every file peftlab writes (adapters, checkpoints, reports) goes to a temporary file in the same
folder, is flushed to disk, then renamed over the destination (`os.replace` is atomic on POSIX).
A folder that must be read as one unit (an adapter, a run, a merged model) is assembled in a
hidden sibling and swapped in whole (`replace_folder`), so a kill leaves the old folder or the
new one, never a mix:

    parent/
      out/                     the old folder, until the swap
      .out.tmp-4242/           the new one, being written by process 4242
      .out.old-4242/           the old one, during the swap (deleted right after)

Entries of the old folder that are not part of the unit (a run's `checkpoints/`, a user's own
files) are carried into the new one before the swap; `.out.tmp-4242/.carried.json` lists them,
so a killed writer's temporaries can be undone (or the swap finished) by the next writer.
Names read from files (a manifest's component folders, a shard index's file names) must be plain
names inside their folder (`child_path`). Tensors are read only through safetensors, which
cannot run code, and used as weights only when floating point and finite (`tensor_problem`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from peftlab.errors import PeftlabError
from peftlab.names import PLAIN_NAME
CARRIED = ".carried.json"
log = logging.getLogger(__name__)


def current_umask() -> int:
    """The process's file mode creation mask (read by setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(destination: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `destination`; rename it into place if the block succeeds."""
    destination = Path(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".tmp", dir=destination.parent)
    os.close(handle)
    temporary = Path(temporary)
    os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp makes it 0600; a written file follows the umask
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, destination)
    finally:
        temporary.unlink(missing_ok=True)


def write_json(destination: str | os.PathLike, data: Any) -> None:
    with atomic_path(destination) as temporary:
        temporary.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_text(destination: str | os.PathLike, text: str) -> None:
    with atomic_path(destination) as temporary:
        temporary.write_text(text)


def write_safetensors(destination: str | os.PathLike, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> None:
    """Save tensors (made contiguous, on CPU, unshared) atomically in safetensors format."""
    plain = {key: tensor.detach().to("cpu").contiguous().clone() for key, tensor in tensors.items()}
    with atomic_path(destination) as temporary:
        save_file(plain, str(temporary), metadata=metadata)


# --- names from files ----------------------------------------------------------------------------
def child_path(folder: Path, name: Any, what: str) -> Path:
    """`folder / name`, refused (PeftlabError) unless `name` is a plain name whose path, links
    resolved, stays inside `folder`: a name read from a file must never reach outside it."""
    if not isinstance(name, str) or not PLAIN_NAME.fullmatch(name):
        raise PeftlabError(f"{what} {name!r} is not a plain name (letters, digits, '_' and '-'): it must name "
                           f"an entry inside {folder}; fix the file that names it")
    path = folder / name
    if not path.resolve().is_relative_to(folder.resolve()):
        raise PeftlabError(f"{what} {name!r} is a link that leads out of {folder} (to {path.resolve()}): "
                           "copy the files into the folder instead of linking them")
    return path


# --- loaded tensors ------------------------------------------------------------------------------
def tensor_problem(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """Why `tensors` cannot be used as weights (the first tensor named), or None when every one is
    floating point and finite. A cast between float types is fine; an int or bool tensor is not."""
    for key, tensor in tensors.items():
        if not tensor.is_floating_point():
            return f"tensor {key!r} is {str(tensor.dtype).removeprefix('torch.')}, weights must be floating point"
        values = tensor.float() if tensor.element_size() == 1 else tensor  # float8: isfinite wants wider types
        if not bool(torch.isfinite(values).all()):
            return f"tensor {key!r} holds NaN or infinite values"
    return None


def note_casts(source: Path, dtypes: Mapping[str, tuple[torch.dtype, torch.dtype]]) -> None:
    """Say once per file (a warning) when its float tensors are cast: `dtypes` maps each tensor
    to (its dtype in the file, the dtype it is loaded as)."""
    casts = sorted({(str(saved), str(used)) for saved, used in dtypes.values() if saved != used})
    if casts:
        changes = ", ".join(f"{saved} to {used}" for saved, used in casts).replace("torch.", "")
        count = sum(saved != used for saved, used in dtypes.values())
        log.warning("%s: %d tensor(s) cast from %s", source, count, changes)


# --- whole folders ------------------------------------------------------------------------------
_SIBLING = re.compile(r"\.(?P<name>.+)\.(?P<role>tmp|old)-(?P<pid>\d+)")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sibling(destination: Path, role: str, pid: int) -> Path:
    return destination.parent / f".{destination.name}.{role}-{pid}"


def _carried(temporary: Path) -> list[str]:
    try:
        names = json.loads((temporary / CARRIED).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(names, list):
        return []
    return [n for n in names if isinstance(n, str) and n not in ("", ".", "..") and "/" not in n and "\0" not in n]


def recover_folder(destination: str | os.PathLike) -> None:
    """Finish or undo what a killed `replace_folder` of `destination` left behind.

    Killed between the two renames of the swap (no `destination`, a complete `.tmp` and the
    `.old`): the swap is finished. Killed before it: the entries it had carried out of the old
    folder go back, and its temporary folder is deleted. Temporaries of live writers stay.
    """
    destination = Path(os.path.abspath(destination))
    if not destination.parent.is_dir():
        return
    matches = [(match, entry) for entry in destination.parent.iterdir()
               if (match := _SIBLING.fullmatch(entry.name)) and match["name"] == destination.name and entry.is_dir()]
    for match, entry in sorted(matches, key=lambda item: item[0]["role"] != "tmp"):  # a swap to finish first
        pid = int(match["pid"])
        if pid == os.getpid() or process_alive(pid):
            continue
        retired = _sibling(destination, "old", pid)
        if match["role"] == "tmp":
            if not destination.exists() and retired.is_dir():
                entry.rename(destination)  # the new folder was complete: finish the swap
                (destination / CARRIED).unlink(missing_ok=True)
                continue
            if destination.is_dir():
                for name in _carried(entry):
                    if (entry / name).exists() and not (destination / name).exists():
                        (entry / name).rename(destination / name)
            shutil.rmtree(entry, ignore_errors=True)
        elif destination.exists():
            shutil.rmtree(entry, ignore_errors=True)
    if destination.is_dir():  # a writer killed right after its swap
        (destination / CARRIED).unlink(missing_ok=True)


@contextlib.contextmanager
def replace_folder(destination: str | os.PathLike, carry: Callable[[Path], bool] = lambda entry: False, *,
                   flush_files: bool = False) -> Iterator[Path]:
    """Yield an empty hidden sibling of `destination` to write into; when the block succeeds it
    replaces `destination` whole. Entries of the old folder for which `carry(entry)` holds (and
    that the new folder does not hold) are moved into the new one first. A failed block leaves
    `destination` as it was. The new folders are flushed to disk before the swap; so are its
    files with `flush_files` (for files other code wrote: peftlab's writers flush their own)."""
    destination = Path(os.path.realpath(destination))  # a link to a folder: the folder is replaced
    if destination.exists() and not destination.is_dir():
        raise PeftlabError(f"{destination} is a file, not a folder: choose a folder path")
    if Path.cwd().is_relative_to(destination):
        raise PeftlabError(f"{destination} holds the current directory, so it cannot be replaced: "
                           "choose a folder below it")
    destination.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(destination)
    temporary, retired = _sibling(destination, "tmp", os.getpid()), _sibling(destination, "old", os.getpid())
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        yield temporary
        _fsync_tree(temporary, flush_files)
        if destination.is_dir():
            carried = [e.name for e in sorted(destination.iterdir())
                       if carry(e) and not (temporary / e.name).exists() and not _SIBLING.fullmatch(e.name)]
            write_json(temporary / CARRIED, carried)  # before the moves: a killed writer can undo them
            for name in carried:
                (destination / name).rename(temporary / name)
            destination.rename(retired)
        (temporary / CARRIED).unlink(missing_ok=True)
        temporary.rename(destination)
        fsync_folder(destination.parent)
    except BaseException as error:
        if not destination.exists() and retired.is_dir():
            retired.rename(destination)
        if destination.is_dir():
            for name in _carried(temporary):
                if (temporary / name).exists() and not (destination / name).exists():
                    (temporary / name).rename(destination / name)
        if isinstance(error, OSError):  # the disk or the permissions, not the caller
            raise PeftlabError(f"could not write {destination} ({error.strerror or error}): check the free space and "
                               "permissions there; the folder was left as it was") from None
        raise
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)


def fsync_folder(folder: Path) -> None:
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _fsync_tree(folder: Path, files: bool) -> None:
    """Flush every folder under `folder`, and with `files` every file (ones save_pretrained wrote)."""
    for path in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)):
        if files and path.is_file() and not path.is_symlink():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        elif path.is_dir():
            fsync_folder(path)
    fsync_folder(folder)


def check_writable_folder(folder: str | os.PathLike, flag: str, *, replaced: bool = True) -> Path:
    """Refuse (one line) an output folder that is a file or cannot be written, before any work is done.

    The folder's parent is created and a probe file written there (where a folder `replaced`
    whole is assembled); permissions are tried rather than predicted, so ACLs and read-only
    mounts count. Temporaries a killed earlier write left next to it are cleaned up.
    """
    folder = Path(os.path.abspath(folder))
    if replaced and Path.cwd().is_relative_to(folder):
        raise PeftlabError(f"{flag} {folder} holds the current directory, which cannot be replaced by a new folder: "
                           "choose a folder below it")
    if folder.exists() and not folder.is_dir():
        raise PeftlabError(f"{flag} {folder} is an existing file: choose a folder path (new or a folder peftlab wrote)")
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise PeftlabError(f"{flag} {folder}: {existing} is a file, so no folder can be made below it; "
                           "choose another path")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        for place in (folder.parent, folder) if folder.is_dir() else (folder.parent,):
            handle, probe = tempfile.mkstemp(prefix=".peftlab-probe-", dir=place)
            os.close(handle)
            os.unlink(probe)
    except OSError as error:
        raise PeftlabError(f"{flag} {folder} cannot be written ({error.strerror or error}): choose a folder "
                           "you can write to") from None
    recover_folder(folder)
    return folder
