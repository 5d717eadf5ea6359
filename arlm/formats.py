"""Files that must never be half written, and versioned JSON: every dataset and checkpoint says
what it is and which version."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from arlm.errors import ArlmError


def read_versioned(path: Path, kind: str, version: int, what: str, fix: str) -> dict:
    """Read `path`, a JSON object whose "format" is `kind` and "format_version" is `version`.

    Args:
        what: how to call the thing in messages ("dataset", "checkpoint").
        fix: what the user can do about a damaged file ("re-create it with `arlm tokenize`").
    """
    path = Path(path)
    if not path.is_file():  # the folder a user pointed to: bad data (1), not a wrong flag (2)
        raise ArlmError(f"{path.parent} is not an arlm {what} (no {path.name}): {fix}")
    try:
        value = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArlmError(f"{path} is corrupt: {fix}") from None
    if not isinstance(value, dict) or value.get("format") != kind:
        raise ArlmError(f"{path} is not an arlm {what}: {fix}")
    if value.get("format_version") != version:
        raise ArlmError(
            f"{path.parent} has {what} format version {value.get('format_version')}, this arlm "
            f"reads {version}: upgrade arlm, or {fix}"
        )
    return value


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(temporary path)`, sync it, and rename it over `path`: a crash leaves the
    old file or the new one, never half of one."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        _pause_for_tests()
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _sync_folder(path.parent)  # make the rename itself survive a power cut
    except OSError as error:
        raise ArlmError(
            f"cannot write {path}: {error.strerror or error} (any previous {path.name} is intact)"
        ) from None
    finally:
        temporary.unlink(missing_ok=True)


# A test hook for tests/kill_test.py: with ARLM_TEST_PAUSE_WRITE=FILE set, each write creates
# FILE once its new file is written but not yet renamed into place, and waits until FILE is
# removed; a SIGKILL sent meanwhile lands exactly mid-write. Unset, it costs one lookup.
PAUSE_WRITE = "ARLM_TEST_PAUSE_WRITE"


def _pause_for_tests() -> None:
    """Say "mid-write" and wait, if the test hook is set (see PAUSE_WRITE)."""
    flag = os.environ.get(PAUSE_WRITE)
    if not flag:
        return
    Path(flag).touch()
    while os.path.exists(flag):
        time.sleep(0.001)


def _sync_folder(folder: Path) -> None:
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:  # some systems cannot open folders: the rename is still atomic
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_json(path: Path, value: dict) -> None:
    text = json.dumps(value, indent=2, ensure_ascii=False) + "\n"
    atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))
