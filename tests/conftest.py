"""Shared test configuration (no cluster here: see tests/integration/conftest.py)."""

from __future__ import annotations

from flaggerpy.testing import pytest_sessionstart

__all__ = ["pytest_sessionstart"]
