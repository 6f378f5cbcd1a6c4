"""flaggerpy: a progressive-delivery operator for Kubernetes, compatible with Flagger."""

from __future__ import annotations

__version__ = "0.1.0"
