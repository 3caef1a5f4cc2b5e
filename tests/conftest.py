"""Shared pytest configuration.

With ``tests/__init__.py`` present, pytest (default "prepend" import mode) puts the
project root on ``sys.path`` when it imports this file, so every test module can
``import bundler`` and ``from tests.fakes... import ...`` without installing anything.
"""
