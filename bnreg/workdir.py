"""The directories bnreg works in: one process at a time, and only directories bnreg made.

**One process at a time.** Two processes writing one directory (the same command started twice)
would interleave their records and move each other's checkpoints. Each directory therefore has
a lock file, ``.bnreg.lock``, held with ``flock`` for as long as a process works in it
(:func:`held`): a second process is refused at once, told who holds it. The kernel releases the
lock when its holder ends, killed or not, so a stale lock file (a dead holder's) is simply taken
over. With several processes of one ``jax.distributed`` run, process 0 holds the lock for all of
them. ``flock`` locks are advisory and local: processes on different hosts sharing a network
file system may not see each other's locks there.

**Only its own directories.** bnreg writes into a directory that is missing or empty, or that
it made for the same owner — an engine run, or a named study — which a marker file,
``.bnreg-workdir``, written before anything else, records (:func:`check_owner`,
:func:`mark`). A directory holding anything else (a user's own ``results.md``, another study's
results) is refused before data is loaded. Directories made before the marker existed are
recognised by their layout: a run's ``config.json``, a study's ``records/study.json`` (or, for
a study that names no records, its runs' ``config.json`` further down).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = ".bnreg.lock"
MARKER_FILE = ".bnreg-workdir"
RUN = "an engine run"
# A study's work dir from before markers, whose study cannot be told: any study may resume it.
EARLIER_STUDY = "a study"


class NotOwnedError(ValueError):
    """A directory that bnreg did not make for this owner."""


class DirectoryInUseError(RuntimeError):
    """Another process works in the directory."""


class NotWritableError(PermissionError):
    """A directory bnreg must write into and cannot."""


def _not_writable(directory: Path, error: OSError) -> NotWritableError:
    return NotWritableError(f"{directory} is not writable ({error.strerror}): pass a directory "
                            "you can write to, or fix its permissions.")


def check_writable(directory: str | Path) -> None:
    """Refuses an existing ``directory`` this process cannot create a file in, before a run
    needs to (orbax would fail only at the first checkpoint).

    Raises:
      NotWritableError: naming the directory.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise _not_writable(directory, error) from None


def _holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text())
        return (f"process {holder['pid']} on {holder['host']}, started "
                f"{holder['started']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


@contextlib.contextmanager
def held(directory: str | Path, *, hold: bool = True) -> Iterator[None]:
    """Holds ``directory``'s lock (creating the directory) for the ``with`` block.

    Args:
      directory: a run's or a study's work dir.
      hold: False for the processes of a distributed run other than process 0: nothing is
        locked.

    Raises:
      DirectoryInUseError: another process holds the lock (the message names it: pid, host,
        start time).
      NotWritableError: the directory cannot be made or written.
    """
    if not hold:
        yield
        return
    directory = Path(directory)
    path = directory / LOCK_FILE
    try:
        directory.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except PermissionError as error:
        raise _not_writable(directory, error) from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DirectoryInUseError(
                f"{directory} is in use by {_holder(path)}: wait for it to end (a rerun of the "
                "same command then resumes), or use another directory.") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(descriptor)  # releases the lock


def study_owner(name: str) -> str:
    """The owner name of study ``name``'s work dir."""
    return f"study {name}"


def _legacy_owner(directory: Path) -> str | None:
    """The owner of a directory made before markers existed, from its layout."""
    study_file = directory / "records" / "study.json"
    if study_file.is_file():
        try:
            return study_owner(json.loads(study_file.read_text())["study"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    if (directory / "config.json").is_file():
        return RUN
    # A study work dir of the dropout studies' own protocol: its runs' configs further down.
    nested = (path for pattern in ("*/config.json", "*/*/config.json", "*/*/*/config.json")
              for path in directory.glob(pattern))
    return EARLIER_STUDY if any(path.is_file() for path in nested) else None


def owner_of(directory: str | Path) -> str | None:
    """Who ``directory`` belongs to: its marker's owner, or a legacy layout's, or None."""
    directory = Path(directory)
    try:
        return json.loads((directory / MARKER_FILE).read_text())["owner"]
    except FileNotFoundError:
        return _legacy_owner(directory)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_owner(directory: str | Path, owner: str) -> None:
    """Refuses a ``directory`` that is not missing, empty or ``owner``'s (writes nothing).

    Raises:
      NotADirectoryError: ``directory`` is a file.
      NotOwnedError: it holds another owner's results, or files bnreg did not make (the
        message names a few and says what to do).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"{directory} is a file, not a directory: pass a directory.")
    if not directory.exists():
        return
    entries = sorted(path.name for path in directory.iterdir() if path.name != LOCK_FILE)
    if not entries:
        return
    found = owner_of(directory)
    if found == owner or (found == EARLIER_STUDY and owner != RUN):
        return
    if found is not None:
        raise NotOwnedError(
            f"{directory} holds the results of {found}, not of {owner}: use another directory, "
            "or --overwrite to delete them first.")
    shown = ", ".join(entries[:5]) + (", …" if len(entries) > 5 else "")
    raise NotOwnedError(
        f"{directory} holds files bnreg did not make ({shown}): use a new or empty directory.")


def mark(directory: str | Path, owner: str, *, write: bool = True) -> None:
    """Records ``owner`` in ``directory``'s marker (creating the directory), once; call
    :func:`check_owner` first. ``write`` False (processes other than 0): nothing."""
    if not write:
        return
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / MARKER_FILE
    if not marker.exists():
        marker.write_text(json.dumps({"owner": owner}) + "\n")
