"""A webhook endpoint whose answers a scenario sets: gates that say no, then yes.

It records every request (method, path, query and JSON body), so a scenario can check what the
controller sent and in which order, and answers each path with the status (and JSON body) the
scenario chose, 200 by default. It is :class:`flaggerpy.testing.WebhookReceiver`, the endpoint
plugin packages test their metrics providers and notifiers against.
"""

from __future__ import annotations

from flaggerpy.testing import Call, WebhookReceiver, serve

__all__ = ["Call", "WebhookReceiver", "serve"]
