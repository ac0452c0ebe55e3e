"""Files written completely or not at all."""
from __future__ import annotations

import os
import secrets

__all__ = ["write_atomically"]


def write_atomically(path, write, *, verify=None):
    """Write ``path`` through a hidden temporary file beside it, renamed into place only when complete.

    A reader never sees a half-written file, an interrupted or failed write
    leaves the old file (or none) and no temporary file behind, and two
    writers cannot share a temporary file.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write; its folder must exist.
    write : callable
        ``write(f)`` writes the content to ``f``, a binary file open for writing.
    verify : callable, optional
        ``verify(tmp_path)`` is called on the complete temporary file before
        the rename and may raise to refuse it (e.g. a checkpoint that does not
        load back).

    Returns
    -------
    str
        ``path``.
    """
    path = os.fspath(path)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    try:
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if verify is not None:
            verify(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
