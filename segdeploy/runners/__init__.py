"""Backends behind one runner contract. Submodules import their backend lazily."""

from segdeploy.runners.base import Runner, check_feeds

__all__ = ["Runner", "check_feeds"]
