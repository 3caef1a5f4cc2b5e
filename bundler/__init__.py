"""bundler: carry snaps, Debian packages and MAAS images into an air-gapped MAAS site."""

__version__ = "0.1.0"
