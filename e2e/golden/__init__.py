"""Replays Flagger's golden corpus (``../shared/reference/golden``) against flaggerpy.

``providers`` says which router folders take part; ``corpus`` reads a case; ``replay`` runs cases
on the local control plane (one controller process per provider and flag set); ``normalize`` and
``steps`` bring what was read into the corpus's form; ``compare`` diffs it with Flagger's,
leaving out the differences listed in ``differences.yaml``. The tests are
``e2e/scenarios/test_golden.py``; docs/testing.md describes the tier.
"""
