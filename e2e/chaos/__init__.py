"""The chaos suite: faults injected into a real canary run, judged against an undisturbed run.

Each fault (a SIGKILLed controller, a conflicting second writer, a Prometheus that stops
answering, a hung webhook or notifier, a restarted control plane, a killed leader) is applied to
the same release as the undisturbed run, and the run's end is compared with the undisturbed one:
the phase it ends in, the routes, what the primary runs, how often the primary was written, which
gates were asked after they had passed. ``make chaos`` runs all of it N times and prints the
report (``e2e/chaos/README.md``); ``make test`` runs a small subset once.
"""
