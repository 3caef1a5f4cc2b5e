"""Path rules shared by the format layer and every target: nothing escapes its root."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from bundler.errors import UnsafeMediaError

MAX_PATH_LEN = 4096
_REMEDY = "the bundle was built wrong or tampered with; do not import it, ask for a new export"


def check_relpath(path: object, *, what: str) -> str:
    """Return ``path`` if it is a safe relative POSIX path, else raise UnsafeMediaError.

    Safe: a non-empty string, not absolute, no backslash or NUL or control
    characters, no empty, ``.`` or ``..`` component, at most MAX_PATH_LEN characters.
    """
    if not isinstance(path, str) or not path:
        raise UnsafeMediaError(f"{what}: path is empty or not a string", remedy=_REMEDY)
    if len(path) > MAX_PATH_LEN:
        raise UnsafeMediaError(f"{what}: path is longer than {MAX_PATH_LEN} characters", remedy=_REMEDY)
    if path.startswith("/"):
        raise UnsafeMediaError(f"{what}: path {path!r} is absolute", remedy=_REMEDY)
    if "\\" in path or any(ord(c) < 32 for c in path):
        raise UnsafeMediaError(f"{what}: path {path!r} contains a backslash or control character", remedy=_REMEDY)
    if any(p in ("", ".", "..") for p in path.split("/")):
        raise UnsafeMediaError(f"{what}: path {path!r} has an empty, '.' or '..' component", remedy=_REMEDY)
    return path


def resolve_inside(root: Path, relpath: str, *, what: str) -> Path:
    """Join a checked relative path to ``root`` and make sure the result stays inside it,
    also when a directory on the way is a symlink that points elsewhere."""
    check_relpath(relpath, what=what)
    root_real = root.resolve()
    candidate = root_real.joinpath(*PurePosixPath(relpath).parts)
    parent = candidate.parent.resolve()
    if not parent.is_relative_to(root_real):
        raise UnsafeMediaError(
            f"{what}: path {relpath!r} would land outside {root}",
            remedy="remove the symlink in the target tree, or do not import this bundle",
        )
    dest = parent / candidate.name
    if dest.is_symlink():
        raise UnsafeMediaError(
            f"{what}: {dest} is a symlink in the target tree",
            remedy="replace it with a regular file or remove it, then re-run",
        )
    return dest
