"""A recording wrapper around the real ``reprepro``, put first on PATH for the CLI under test.

::

    rec = RepreproRecorder(tmp_path / "rec")
    ws.env.update(rec.env())               # PATH=<rec>/bin:$PATH, the log file
    ws.import_(bundle)
    rec.calls()                            # [Call(argv=[...], rc=0), ...] in call order
    rec.actions("includedeb")              # the includedeb calls only

Every call runs the real reprepro with the same arguments and exit code. Optionally the
wrapper kills the process that ran it (the importer) with SIGKILL right after a given
action succeeds, once: a crash in the middle of a publish (:meth:`crash_after`).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ACTIONS", "Call", "RepreproRecorder"]

ACTIONS = ("update", "includedeb", "remove", "export", "clearvanished", "deleteunreferenced", "list", "listfilter")

_SCRIPT = """#!{python}
import json, os, signal, subprocess, sys
argv = sys.argv[1:]
rc = subprocess.run([{real!r}, *argv]).returncode
with open({log!r}, "a") as fh:
    fh.write(json.dumps({{"argv": argv, "rc": rc}}) + "\\n")
crash = {crash!r}
if os.path.exists(crash):
    action = open(crash).read().strip()
    if rc == 0 and action in argv:
        os.unlink(crash)
        os.kill(os.getppid(), signal.SIGKILL)
sys.exit(rc)
"""


@dataclass(frozen=True)
class Call:
    argv: list[str]
    rc: int

    @property
    def action(self) -> str | None:
        return next((a for a in self.argv if a in ACTIONS), None)

    def option(self, name: str) -> str | None:
        """The value after ``name`` (e.g. ``-C``), if given."""
        if name in self.argv:
            i = self.argv.index(name)
            return self.argv[i + 1] if i + 1 < len(self.argv) else None
        return None

    def operands(self) -> list[str]:
        """What follows the action (e.g. codename and files for includedeb)."""
        if self.action is None:
            return []
        return self.argv[self.argv.index(self.action) + 1 :]


class RepreproRecorder:
    def __init__(self, root: Path) -> None:
        real = shutil.which("reprepro")
        if real is None:
            raise RuntimeError("reprepro is not installed")
        self.root = root.resolve()
        self.bin = self.root / "bin"
        self.bin.mkdir(parents=True, exist_ok=True)
        self.log = self.root / "calls.jsonl"
        self.crash_file = self.root / "crash-after"
        script = self.bin / "reprepro"
        script.write_text(
            _SCRIPT.format(
                python=sys.executable, real=str(Path(real).resolve()), log=str(self.log), crash=str(self.crash_file)
            )
        )
        script.chmod(0o755)

    def env(self) -> dict[str, str]:
        return {"PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}"}

    def calls(self) -> list[Call]:
        if not self.log.exists():
            return []
        return [Call(**json.loads(line)) for line in self.log.read_text().splitlines() if line.strip()]

    def actions(self, action: str) -> list[Call]:
        return [c for c in self.calls() if c.action == action]

    def clear(self) -> None:
        self.log.unlink(missing_ok=True)

    def crash_after(self, action: str) -> None:
        """The next successful call of ``action`` SIGKILLs its parent (the importer), once."""
        self.crash_file.write_text(action)
