"""Throwaway GnuPG homes for tests: generate a key, export it, sign with it.

::

    with GpgHome() as gpg:
        fpr = gpg.generate("Test Archive <archive@example.invalid>")
        gpg.export_binary(fpr, tmp / "archive.gpg")    # for gpgv --keyring and apt Signed-By
        gpg.clearsign(release, inrelease, fpr)
        gpg.detach_sign(release, release_gpg, fpr)     # armored, as Release.gpg

The home lives directly under /tmp with a short name (the gpg-agent socket may be
created inside it and socket paths are limited to ~108 bytes). Leaving the block kills
the home's agent (``gpgconf --kill all``) and deletes the directory.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["GpgError", "GpgHome", "daemon_pids"]

_KEY_CREATED = re.compile(r"^\[GNUPG:\] KEY_CREATED [PB] ([0-9A-F]{40})\b", re.MULTILINE)


def daemon_pids(home: Path) -> list[int]:
    """Live processes started with ``--homedir <home>`` (gpg-agent, keyboxd, dirmngr)."""
    needle = b"--homedir\0" + str(home).encode() + b"\0"
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if needle in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


class GpgError(RuntimeError):
    """A gpg/gpgconf call failed; the message carries the command and gpg's stderr."""


class GpgHome:
    """A temporary GNUPGHOME (context manager). Keys are ed25519, without passphrase."""

    def __init__(self) -> None:
        self._path: Path | None = None

    @property
    def path(self) -> Path:
        if self._path is None:
            raise GpgError("GpgHome used outside its `with` block")
        return self._path

    def __enter__(self) -> GpgHome:
        self._path = Path(tempfile.mkdtemp(prefix="g.", dir="/tmp"))
        self._path.chmod(0o700)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill the agent (and any other daemon) of this home and remove it. Idempotent."""
        path, self._path = self._path, None
        if path is None:
            return
        try:
            subprocess.run(
                ["gpgconf", "--homedir", str(path), "--kill", "all"],
                capture_output=True,
                timeout=30,
                check=False,
            )
            # --kill only asks; wait for the daemons of this home to be gone (TERM after 5 s).
            deadline = time.monotonic() + 5
            while (pids := daemon_pids(path)) and time.monotonic() < deadline:
                time.sleep(0.01)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        finally:
            shutil.rmtree(path, ignore_errors=True)

    # ------------------------------------------------------------------------------

    def run(self, *args: str | os.PathLike[str], input: bytes | None = None) -> bytes:
        """Run ``gpg --homedir H --batch --no-tty ARGS``; return stdout, raise GpgError on failure."""
        cmd = ["gpg", "--homedir", str(self.path), "--batch", "--no-tty", *map(str, args)]
        proc = subprocess.run(cmd, input=input, capture_output=True, timeout=60, check=False)
        if proc.returncode != 0:
            stderr = proc.stderr.decode(errors="replace").strip()
            raise GpgError(f"{' '.join(cmd)} exited {proc.returncode}:\n{stderr}")
        return proc.stdout

    def generate(self, uid: str) -> str:
        """Create an ed25519 signing key without passphrase; return its 40-hex fingerprint."""
        out = self.run("--status-fd", "1", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never")
        match = _KEY_CREATED.search(out.decode())
        if match is None:
            raise GpgError(f"no KEY_CREATED status for {uid!r}: {out.decode(errors='replace')}")
        return match.group(1)

    def export_binary(self, fpr: str, path: Path) -> Path:
        """Write the public key as a binary (non-armored) keyring: usable by gpgv
        ``--keyring`` and by apt ``Signed-By:`` in a ``*.gpg`` file."""
        return self._export(fpr, path, armor=False)

    def export_armored(self, fpr: str, path: Path) -> Path:
        """Write the public key ASCII-armored (for apt only in a ``*.asc`` file or inline)."""
        return self._export(fpr, path, armor=True)

    def _export(self, fpr: str, path: Path, *, armor: bool) -> Path:
        data = self.run(*(["--armor"] if armor else []), "--export", fpr)
        if not data:  # gpg exits 0 with "nothing exported" for an unknown key
            raise GpgError(f"no public key {fpr} in {self.path}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def clearsign(self, src: Path, dst: Path, fpr: str) -> Path:
        """Clearsign ``src`` into ``dst`` (as ``InRelease``), overwriting ``dst``."""
        return self._sign("--clearsign", src, dst, fpr)

    def detach_sign(self, src: Path, dst: Path, fpr: str) -> Path:
        """Write an armored detached signature of ``src`` to ``dst`` (as ``Release.gpg``)."""
        return self._sign("--detach-sign", src, dst, fpr, "--armor")

    def _sign(self, mode: str, src: Path, dst: Path, fpr: str, *extra: str) -> Path:
        # "FPR!" forces this exact key (not a subkey chosen by gpg); SHA512 as Ubuntu does.
        self.run("--yes", "--local-user", f"{fpr}!", "--digest-algo", "SHA512", *extra, "--output", dst, mode, src)
        return dst
