"""User-input errors: what the ``edgeml`` command reports in one line instead of a traceback.

:class:`InputError` is raised at the loading boundary (bundle, traces, policy, calibration,
source files, flag values) with a message that names the file or field, the value found and
what is allowed. It is a :class:`ValueError`, so code that already catches ``ValueError``
keeps working. ``edgeml``'s ``main()`` catches it (and :class:`OSError`) for every
sub-command, prints ``edgeml <command>: <message>`` and exits 2; ``-v`` adds the traceback.
Any other exception is a bug and still propagates with its traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["InputError", "as_input_error", "load_npy", "load_npz", "one_line"]


class InputError(ValueError):
    """A bad file, field or flag value supplied by the user (message names it)."""


@contextlib.contextmanager
def as_input_error() -> Iterator[None]:
    """Treat a ``ValueError`` raised inside the block as bad user input.

    For the set-up phase of a command (flags -> loaded objects), where every validator
    raises ``ValueError`` with a ``field: problem`` message; the work that follows is not
    wrapped, so a ``ValueError`` from a bug there still shows its traceback.
    """
    try:
        yield
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(str(exc)) from exc


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line (an ``OSError`` as ``file: reason``)."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        msg = f"{exc.filename}: {exc.strerror}"
    else:
        msg = str(exc) or type(exc).__name__
    return " ".join(part.strip() for part in msg.splitlines() if part.strip())


def load_npz(path: str | Path, what: str, need: tuple[str, ...] = ()) -> dict[str, Any]:
    """All arrays of an ``.npz`` (no pickles), or an :class:`InputError` naming the file.

    ``what`` says what the file should be (``"an exported actor .npz"``); ``need`` lists
    arrays it must hold.
    """
    import zipfile
    import zlib

    import numpy as np

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            if not isinstance(z, np.lib.npyio.NpzFile):
                raise InputError(f"{path}: a single .npy array, not {what}")
            arrays = {k: z[k] for k in z.files}
    except InputError:
        raise
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (expected {what})") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory (expected {what})") from None
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError):
        # numpy reads anything that is neither a zip nor .npy magic as a pickle and
        # refuses it ("contains pickled (object) data"): for us that is a damaged file.
        raise InputError(f"{path}: not a .npz archive of plain arrays; expected {what}") from None
    missing = [k for k in need if k not in arrays]
    if missing:
        raise InputError(
            f"{path}: lacks arrays {missing} (found {sorted(arrays)}); expected {what}"
        )
    return arrays


def load_npy(path: str | Path, what: str) -> Any:
    """The array of a ``.npy`` (no pickles), or an :class:`InputError` naming the file."""
    import numpy as np

    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file (expected {what})") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory (expected {what})") from None
    except (ValueError, EOFError):
        raise InputError(f"{path}: not a .npy array of plain numbers; expected {what}") from None
    if not isinstance(arr, np.ndarray):
        arr.close()
        raise InputError(f"{path}: a .npz archive, not {what}")
    return arr
