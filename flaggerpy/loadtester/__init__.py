"""``flaggerpy loadtester``: a drop-in for Flagger's ``flagger-loadtester``, with safety catches.

Canaries call it from their webhooks to generate traffic during analysis
(``hey``), to run acceptance tests before a rollout (``bash``, ``helm
test``, ``kubectl``) and to hold a rollout at a manual gate. The HTTP API,
the task types and the gate keys are Flagger's, so a Canary written for
Flagger's load tester works unchanged; what differs is listed in
``docs/compatibility.md`` and explained in ``docs/loadtester.md``.

Modules, in the order a request meets them:

- :mod:`~flaggerpy.loadtester.config`: flags and environment → ``LoadTesterSettings``
- :mod:`~flaggerpy.loadtester.server`: the aiohttp service (a manager ``Runnable``)
- :mod:`~flaggerpy.loadtester.payload`: the webhook payload, parsed strictly
- :mod:`~flaggerpy.loadtester.tasks`: metadata → a checked ``TaskSpec`` (pure)
- :mod:`~flaggerpy.loadtester.runner`: deduplication of background tasks, joining of blocking ones
- :mod:`~flaggerpy.loadtester.process`: one command in its own process group, bounded output
- :mod:`~flaggerpy.loadtester.gates`: manual gates, and :mod:`~flaggerpy.loadtester.client`
  for them
- :mod:`~flaggerpy.loadtester.telemetry`: its Prometheus metrics

The package imports nothing itself, so ``flaggerpy``'s CLI can read the
flags from :mod:`~flaggerpy.loadtester.config` without loading aiohttp;
import the modules you use.
"""

from __future__ import annotations
