"""The web dashboard: every canary, its weight and checks as a chart, its Events, and the
steering actions, served by the controller (``-dashboard-listen-address``) and by ``kubectl
flaggerpy dashboard`` from the same pages (docs/dashboard.md).

- :mod:`~flaggerpy.dashboard.summary`: what a canary is doing (shared with the kubectl views);
- :mod:`~flaggerpy.dashboard.commands`: the CanaryCommand builder (shared with kubectl steer);
- :mod:`~flaggerpy.dashboard.history`: the weight and metric timeline;
- :mod:`~flaggerpy.dashboard.pages`: the templates; ``static/`` holds the script, the styles
  and uPlot (vendored, MIT, ``static/uPlot.LICENSE``);
- :mod:`~flaggerpy.dashboard.auth`: TokenReview, SubjectAccessReview and CSRF tokens;
- :mod:`~flaggerpy.dashboard.server`: the aiohttp application;
- :mod:`~flaggerpy.dashboard.controller`: the controller's Runnable, reading its caches.

It sits in the process layer, below the composition root and the kubectl plugin that serve it.
"""
