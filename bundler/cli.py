"""The ``bundle`` command: options -> one library call -> rendered result.

The only place that catches errors and chooses exit codes (see ``docs/CLI.md``).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from bundler import __version__
from bundler.errors import BundlerError, UsageError
from bundler.format.signing import PRIVATE_SUFFIX, generate_keypair, load_public_key, load_signing_key
from bundler.kinds import REGISTRY, init_enclave
from bundler.ui import TerminalReporter, emit_json, emit_lines, error
from bundler.units import human, parse_size

EXIT_INCOMPLETE = 3
T = TypeVar("T")


def _env_path(var: str, default: Path) -> Path:
    return Path(os.environ[var]) if os.environ.get(var) else default


def _xdg(var: str, fallback: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / fallback)


DEFAULT_PRIVATE_DIR = _xdg("XDG_CONFIG_HOME", ".config") / "bundler" / "keys"
DEFAULT_KEY = _env_path("BUNDLER_KEY", DEFAULT_PRIVATE_DIR / f"exporter{PRIVATE_SUFFIX}")
DEFAULT_STATE = _env_path("BUNDLER_STATE", _xdg("XDG_STATE_HOME", ".local/state") / "bundler")
DEFAULT_CACHE = _env_path("BUNDLER_CACHE", _xdg("XDG_CACHE_HOME", ".cache") / "bundler")
DEFAULT_KEYS = _env_path("BUNDLER_KEYS", Path("keys"))

app = typer.Typer(
    name="bundle",
    help=(
        "Carry snaps, Debian packages, MAAS images and plain files into an air-gapped MAAS site.\n\n"
        "On the connected host: 'bundle export SPEC --out DIR' writes a signed, chunked, zstd bundle onto "
        "one or more volumes (one per medium). In the enclave: 'bundle verify' checks it without writing, "
        "'bundle import' verifies it, publishes it and records what the enclave now holds.\n\n"
        f"Content kinds: {', '.join(sorted(REGISTRY))}. Exit codes: 0 ok, 2 usage, 3 import needs more "
        "volumes, 10-19 spec/usage/keys, 20-29 verification, 30-39 upstream, 40-49 target, 50-59 state "
        "(docs/CLI.md)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
keys_app = typer.Typer(help="Create and list bundle signing keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
enclave_app = typer.Typer(help="Set up an enclave (the first import does this too).", no_args_is_help=True)
app.add_typer(enclave_app, name="enclave")


class _Global:
    quiet = False
    debug = False


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bundler {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars, no warnings.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _Global.quiet = quiet
    _Global.debug = debug


def _run(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except BundlerError as exc:
        if _Global.debug:
            traceback.print_exc()
        error(str(exc))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        error("interrupted; nothing was published that is not complete: re-run the same command to finish")
        raise typer.Exit(130) from None


def _reporter(as_json: bool) -> TerminalReporter:
    return TerminalReporter(quiet=_Global.quiet or as_json)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of a summary.")]
KeysOpt = Annotated[Path, typer.Option("--keys", help="Directory of trusted public keys (*.pub). Env: BUNDLER_KEYS.")]


@app.command("export")
def export_cmd(
    spec: Annotated[Path, typer.Argument(help="Carry spec: a manifests/*.toml file naming what to bring.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="New or empty directory; volumes go in vol-001, ...")],
    volume_size: Annotated[
        str | None,
        typer.Option("--volume-size", help="Size of one medium (e.g. 32G): spread the bundle over several volumes."),
    ] = None,
    chunk_size: Annotated[
        str | None,
        typer.Option(
            "--chunk-size",
            help="Largest stored piece (default 1G; at most 4G-1 for FAT32). Files are cut into pieces of at"
            " most 2 MiB anyway; a smaller value cuts them smaller.",
        ),
    ] = None,
    key: Annotated[Path, typer.Option("--key", help="Ed25519 signing key (PEM). Env: BUNDLER_KEY.")] = DEFAULT_KEY,
    state: Annotated[
        Path, typer.Option("--state", help="Exporter ledger: what earlier bundles carried. Env: BUNDLER_STATE.")
    ] = DEFAULT_STATE,
    cache: Annotated[Path, typer.Option("--cache", help="Download cache. Env: BUNDLER_CACHE.")] = DEFAULT_CACHE,
    full: Annotated[bool, typer.Option("--full", help="Carry everything, not a delta on the last bundle.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Collect what SPEC names, verify it upstream, and write a signed bundle to --out."""
    rep = _reporter(as_json)
    from bundler.exporter import ExportOptions, export_bundle  # the connected side only

    opts = ExportOptions(
        spec=spec,
        out=out,
        key=key,
        state_dir=state,
        cache_dir=cache,
        now=_now(),
        full=full,
        volume_size=_run(lambda: parse_size(volume_size)) if volume_size else None,
        chunk_size=_run(lambda: parse_size(chunk_size)) if chunk_size else None,
    )
    r = _run(lambda: export_bundle(opts, rep))
    if as_json:
        d = asdict(r)
        d["volumes"] = [str(v) for v in r.volumes]
        d["warnings"] = rep.warnings
        emit_json({"command": "export", **d})
        return
    kind = "full bundle" if r.base is None else f"delta on #{r.base.sequence}"
    emit_lines(
        [
            f"exported {r.series} #{r.sequence} ({kind}), signed by {r.signer[:16]}",
            f"  entries {r.entries}, files {r.files} ({r.files_carried} carried, "
            f"{r.files - r.files_carried} already in the enclave)",
            f"  payload {human(r.raw_bytes)} -> {human(r.stored_bytes)} in {r.chunks} chunk(s) on "
            f"{len(r.volumes)} volume(s), {r.seconds:.1f} s",
            *[f"  volume {i}: {v}" for i, v in enumerate(r.volumes, 1)],
            f"  expires {r.expires:%Y-%m-%d %H:%M} UTC" if r.expires else "  never expires",
        ]
    )


@app.command("verify")
def verify_cmd(
    volumes: Annotated[list[Path], typer.Argument(help="Volume directories (or a directory holding them).")],
    keys: KeysOpt = DEFAULT_KEYS,
    enclave: Annotated[
        Path | None, typer.Option("--enclave", help="Also check the series rules against this enclave.")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check signature, every chunk and every file digest. Writes nothing."""
    rep = _reporter(as_json)
    from bundler.verifier import verify_bundle

    r = _run(lambda: verify_bundle(volumes, keys, now=_now(), enclave=enclave, reporter=rep))
    if as_json:
        emit_json({"command": "verify", "ok": True, **asdict(r)})
        return
    lines = [
        f"OK: {r.series} #{r.sequence}, signed by {r.signer[:16]}",
        f"  volumes checked {list(r.volumes_checked)}; {r.chunks_checked} chunk(s), {r.files_checked} file(s), "
        f"{human(r.bytes_checked)} in {r.seconds:.1f} s",
    ]
    if r.volumes_missing:
        lines.append(
            f"  not given: volume(s) {list(r.volumes_missing)}; {r.files_partial} file(s) spanning them "
            "were checked chunk by chunk only"
        )
    if r.expired:
        lines.append("  note: this bundle has expired; import will refuse it without --allow-expired")
    emit_lines(lines)


@app.command("inspect")
def inspect_cmd(
    volumes: Annotated[list[Path], typer.Argument(help="A volume directory (or a directory holding them).")],
    keys: KeysOpt = DEFAULT_KEYS,
    as_json: JsonOpt = False,
) -> None:
    """Show what a bundle holds: series, sequence, base, signer, entries and sizes (checks the signature)."""
    from bundler.verifier import inspect_bundle

    d = _run(lambda: inspect_bundle(volumes, keys, now=_now()))
    for w in d["warnings"]:
        _reporter(as_json).warn(w)
    if as_json:
        emit_json({"command": "inspect", **d})
        return
    base = "none (full bundle)" if d["base"] is None else f"#{d['base']['sequence']} ({d['base']['digest'][:16]})"
    lines = [
        f"bundle   {d['series']} #{d['sequence']}  base {base}",
        f"manifest {d['digest']}",
        f"signer   {d['signer'][:16]} ({d['signer_file']})",
        f"created  {d['created']}  expires {d['expires'] or 'never'}{'  EXPIRED' if d['expired'] else ''}",
        f"payload  {human(d['stored_bytes'])} in {d['chunks']} chunk(s), {d['volumes']} volume(s); "
        f"here: {d['volumes_here']}",
    ]
    for kind, k in sorted(d["kinds"].items()):
        lines.append(
            f"{kind:8} {k['entries']} entries, {k['files']} files ({human(k['bytes'])}), carried "
            f"{k['files_carried']} ({human(k['bytes_carried'])})"
        )
    for e in d["entries"]:
        lines.append(
            f"  {e['kind']}/{e['name']} {e['version']} {e['arch']}: {e['files']} file(s), "
            f"{human(e['bytes'])}, {e['carried']} carried"
        )
    emit_lines(lines)


#: Per kind and direction, the summary lists this many names; --json lists all.
SUMMARY_NAMES = 20


def _some(sign: str, names: tuple[str, ...]) -> list[str]:
    shown = [f"    {sign} {n}" for n in names[:SUMMARY_NAMES]]
    if len(names) > SUMMARY_NAMES:
        shown.append(f"    {sign} ... and {len(names) - SUMMARY_NAMES} more (--json lists them all)")
    return shown


def _key_values(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--target-option {item!r} is not KEY=VALUE", remedy="e.g. -o snap_target=proxy")
        out[key.strip()] = value
    return out


@app.command("import")
def import_cmd(
    volumes: Annotated[list[Path], typer.Argument(help="Volume directories, in any order; one per run is fine.")],
    enclave: Annotated[Path, typer.Option("--enclave", help="The enclave's data directory.")],
    keys: KeysOpt = DEFAULT_KEYS,
    allow_expired: Annotated[
        bool, typer.Option("--allow-expired", help="Import an expired bundle (for enclaves whose clock is wrong).")
    ] = False,
    target_option: Annotated[
        list[str] | None,
        typer.Option(
            "--target-option",
            "-o",
            metavar="KEY=VALUE",
            help="A setting for one kind's target, repeatable (docs/FORMAT.md section 13), e.g. "
            "snap_target=proxy, snap_proxy_command=snap-proxy, maas_mirror_url=http://mirror.site/maas-images.",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a bundle completely, publish it into the enclave, and record what the enclave holds."""
    rep = _reporter(as_json)
    from bundler.importer import ImportOptions, import_bundle

    opts = ImportOptions(
        volumes=tuple(volumes),
        enclave=enclave,
        keys=keys,
        now=_now(),
        allow_expired=allow_expired,
        target_options=_run(lambda: _key_values(target_option or [])),
    )
    r = _run(lambda: import_bundle(opts, rep))
    if as_json:
        emit_json({"command": "import", **asdict(r)})
    elif r.status == "already-applied":
        emit_lines([f"already applied: {r.series} #{r.sequence} ({r.digest[:16]}); nothing to do"])
    elif r.status == "incomplete":
        emit_lines(
            [
                f"staged volume(s) {list(r.volumes_given)} of {r.series} #{r.sequence}; nothing published yet",
                f"  still needed: volume(s) {list(r.volumes_missing)} ({r.chunks_missing} of {r.chunks_total} chunks)",
                "  insert the next medium and run the same command with its volume directory",
            ]
        )
    else:
        lines = [f"imported {r.series} #{r.sequence}, signed by {r.signer[:16]}, in {r.seconds:.1f} s"]
        for rep_ in r.reports:
            lines.append(
                f"  {rep_.kind}: {len(rep_.added)} added/updated, {len(rep_.removed)} removed, "
                f"{rep_.unchanged} unchanged"
            )
            lines += _some("+", rep_.added) + _some("-", rep_.removed)
            lines += [f"    {n}" for n in rep_.notes]
        emit_lines(lines)
    if r.status == "incomplete":
        raise typer.Exit(EXIT_INCOMPLETE)


@keys_app.command("generate")
def keys_generate(
    name: Annotated[str, typer.Argument(help="Key name, e.g. site-a-exporter.")] = "exporter",
    private_dir: Annotated[
        Path, typer.Option("--private-dir", help="Where the private key goes (mode 0600); never keys/.")
    ] = DEFAULT_PRIVATE_DIR,
    public_dir: Annotated[
        Path, typer.Option("--public-dir", help="Where the public key goes: the keys/ the enclave trusts.")
    ] = DEFAULT_KEYS,
    as_json: JsonOpt = False,
) -> None:
    """Create an Ed25519 signing key pair for exports."""
    priv, pub, keyid = _run(lambda: generate_keypair(name, private_dir, public_dir))
    if as_json:
        emit_json({"command": "keys generate", "keyid": keyid, "private": str(priv), "public": str(pub)})
        return
    emit_lines(
        [
            f"key id  {keyid}",
            f"private {priv} (mode 0600: keep it on the export host only)",
            f"public  {pub} (copy it into the enclave's keys/ directory)",
        ]
    )


@keys_app.command("list")
def keys_list(
    keys: KeysOpt = DEFAULT_KEYS,
    private_dir: Annotated[
        Path, typer.Option("--private-dir", help="Also list private keys here.")
    ] = DEFAULT_PRIVATE_DIR,
    as_json: JsonOpt = False,
) -> None:
    """List trusted public keys and local private keys with their ids."""

    def collect() -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for p in sorted(keys.glob("*.pub")) if keys.is_dir() else []:
            rows.append({"keyid": load_public_key(p).keyid, "type": "public (trusted)", "file": str(p)})
        for p in sorted(private_dir.glob(f"*{PRIVATE_SUFFIX}")) if private_dir.is_dir() else []:
            rows.append({"keyid": load_signing_key(p).keyid, "type": "private", "file": str(p)})
        return rows

    rows = _run(collect)
    if as_json:
        emit_json({"command": "keys list", "keys": rows})
        return
    if not rows:
        emit_lines([f"no keys in {keys} or {private_dir}; create one with 'bundle keys generate'"])
    emit_lines([f"{r['keyid'][:16]}  {r['type']:16}  {r['file']}" for r in rows])


@enclave_app.command("init")
def enclave_init(
    enclave: Annotated[Path, typer.Option("--enclave", help="The enclave's data directory.")],
    as_json: JsonOpt = False,
) -> None:
    """Create the enclave's own keys (e.g. the repository signing key) and show what to hand to MAAS."""
    info = _run(lambda: init_enclave(enclave))
    if as_json:
        emit_json({"command": "enclave init", **info})
        return
    emit_lines([f"{k}: {v}" for k, v in info.items()])


def main() -> None:
    try:
        app()
    except BundlerError as exc:  # raised outside a command's _run, e.g. while parsing options
        error(str(exc))
        sys.exit(exc.exit_code)
