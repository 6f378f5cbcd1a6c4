"""``type: jsonhttp``: a flaggerpy metrics provider for any HTTP API that answers a JSON number.

A MetricTemplate names it and says where to ask::

    apiVersion: flagger.app/v1beta1
    kind: MetricTemplate
    metadata: {name: error-rate}
    spec:
      provider: {type: jsonhttp, address: "http://metrics.example/api/value"}
      query: errors{namespace="{{ namespace }}",target="{{ target }}"}

Each analysis tick, flaggerpy renders the query and the provider GETs
``<address>?query=<rendered query>``, reading the answer as described in
:class:`~flaggerpy_jsonhttp.provider.JsonHttpProvider`.

This package is the example metrics provider of docs/plugins.md: it imports ``flaggerpy.sdk``
only (and aiohttp), is registered under the ``flaggerpy.metrics`` entry point ``jsonhttp``, and
is built, installed and tested by flaggerpy's CI.
"""

from __future__ import annotations

from flaggerpy_jsonhttp.provider import JsonHttpProvider, read_value

__all__ = ["JsonHttpProvider", "read_value"]
