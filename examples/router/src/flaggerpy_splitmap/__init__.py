"""Splitmap: an imaginary mesh whose traffic split lives in a ConfigMap, and its flaggerpy router.

Splitmap's proxies read one ConfigMap per service, ``<svc>-split``, and send ``primaryWeight``
percent of the traffic for ``<svc>`` to the ``<svc>-primary`` Service and ``canaryWeight``
percent to ``<svc>-canary``. Without that ConfigMap they send everything to ``<svc>`` as it is.
So the router owns one object per canary, and a canary run is a series of writes to it.

This package is the example router of docs/plugins.md: it imports ``flaggerpy.sdk`` only, is
registered under the ``flaggerpy.routers`` entry point ``splitmap``, and is built, installed and
tested by flaggerpy's CI (``tests/integration/test_example_plugins.py``).
"""

from __future__ import annotations

from flaggerpy_splitmap.router import (
    SPLIT_SUFFIX,
    SplitmapRouter,
    build_split,
    kept_weights,
    read_weights,
    split_name,
)

__all__ = [
    "SPLIT_SUFFIX",
    "SplitmapRouter",
    "build_split",
    "kept_weights",
    "read_weights",
    "split_name",
]
