"""Name rules shared by the ``deb`` source and target.

Every value that ends up in a reprepro configuration file or on a reprepro command line
(archive ids, suites, components, architectures, package names, versions) is checked
against these patterns first, so a manifest value can never add a configuration line or
an option.
"""

from __future__ import annotations

import re

NAME = re.compile(r"[a-z0-9][a-z0-9.-]*")
"""An archive id (the carry-spec section's ``name``)."""
SUITE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
COMPONENT = re.compile(r"[a-z0-9][a-z0-9._-]*")
ARCH = re.compile(r"[a-z0-9][a-z0-9-]*")
PKG = r"[a-z0-9][a-z0-9+.-]*"
VERSION = r"[A-Za-z0-9.+~:-]+"
PKG_RE = re.compile(PKG)
VERSION_RE = re.compile(VERSION)
HEX64 = re.compile(r"[0-9a-f]{64}")
FINGERPRINT = re.compile(r"[0-9A-F]{40}|[0-9A-F]{64}")


def pool_prefix(source: str) -> str:
    """The pool directory letter(s) of a source package: ``libfoo`` -> ``libf``, ``hello`` -> ``h``
    (the rule Debian's dak and reprepro both follow)."""
    return source[:4] if source.startswith("lib") and len(source) > 3 else source[0]


def pool_path(component: str, source: str, package: str, version: str, arch: str) -> str:
    """Where reprepro stores a binary package: ``pool/<component>/<prefix>/<source>/<package>_<version
    without epoch>_<arch>.deb``."""
    bare = version.split(":", 1)[-1]
    return f"pool/{component}/{pool_prefix(source)}/{source}/{package}_{bare}_{arch}.deb"
