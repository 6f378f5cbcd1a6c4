"""A real Kubernetes control plane on loopback, built from pinned Go modules.

Standard library only, so ``e2e/cluster/up`` runs before any virtualenv exists.
"""
