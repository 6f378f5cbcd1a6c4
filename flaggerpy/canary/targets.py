"""Which workload controller serves a Canary's target: the Deployment or the DaemonSet one.

Apart from :mod:`flaggerpy.canary.workloads` (the contract and the helpers both kinds build on)
so that the implementations import the contract and only this module imports the
implementations: no import cycle, and no import deferred to break one.
"""

from __future__ import annotations

from flaggerpy import kube
from flaggerpy.canary.daemonsets import DaemonSetController
from flaggerpy.canary.deployments import DeploymentController
from flaggerpy.canary.knative_services import KnativeServiceController
from flaggerpy.canary.service_targets import ServiceTargetController
from flaggerpy.canary.workloads import UnsupportedTargetError, WorkloadController
from flaggerpy.models import Canary
from flaggerpy.settings import Settings


def workload_controller(
        canary: Canary,
        *,
        store: kube.ObjectStore,
        settings: Settings,
) -> WorkloadController:
    """The controller for the Canary's target kind: Deployment or DaemonSet.

    Cheap to call on every reconcile: it holds references only, all state is in the store and
    the Canary status. Other kinds raise :class:`UnsupportedTargetError` (the CRD already limits
    ``targetRef.kind`` to Deployment, DaemonSet and Service).
    """
    kind = canary.spec.target_ref.kind
    if canary.is_knative_service():
        return KnativeServiceController(store=store, settings=settings)
    if kind == DeploymentController.kind:
        return DeploymentController(store=store, settings=settings)
    if kind == DaemonSetController.kind:
        return DaemonSetController(store=store, settings=settings)
    if kind == ServiceTargetController.kind and not canary.is_knative_service():
        return ServiceTargetController(store=store, settings=settings)
    raise UnsupportedTargetError(
        f"canary {canary.name}.{canary.namespace}: targetRef kind {kind!r} is not handled by"
        " the workload controllers (Deployment, DaemonSet)")
