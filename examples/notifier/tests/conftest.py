"""The flaggerpy.testing fixtures (``flaggerpy_*``): a control plane, namespaces, the controller."""

pytest_plugins = ["flaggerpy.testing"]
