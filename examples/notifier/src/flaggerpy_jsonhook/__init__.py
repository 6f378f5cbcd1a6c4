"""``type: jsonhook``: a flaggerpy notifier that posts Mattermost-style JSON to a webhook.

An AlertProvider names it and gives the webhook's URL (better: a Secret with an ``address``
key, since the URL is a credential)::

    apiVersion: flagger.app/v1beta1
    kind: AlertProvider
    metadata: {name: team-chat}
    spec: {type: jsonhook, channel: deployments, username: flagger,
           secretRef: {name: team-chat-webhook}}

and a Canary's ``analysis.alerts`` refers to it. Each alert is one POST of the payload built by
:func:`~flaggerpy_jsonhook.notifier.build_payload`.

This package is the example notifier of docs/plugins.md: it imports ``flaggerpy.sdk`` only (and
aiohttp), is registered under the ``flaggerpy.notifiers`` entry point ``jsonhook``, and is built,
installed and tested by flaggerpy's CI.
"""

from __future__ import annotations

from flaggerpy_jsonhook.notifier import COLORS, JsonHookNotifier, build_payload

__all__ = ["COLORS", "JsonHookNotifier", "build_payload"]
