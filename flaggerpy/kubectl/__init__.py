"""``kubectl flaggerpy``: look at canaries and steer them from the command line.

kubectl runs any ``kubectl-flaggerpy`` executable on the PATH as ``kubectl flaggerpy``; the
console script of that name is :func:`flaggerpy.kubectl.main.main`. It talks to the API server
through the user's own kubeconfig (``--kubeconfig``, ``--context``, ``-n``), so what it may do is
what the user's RBAC allows.
"""
