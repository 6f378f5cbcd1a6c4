"""SMI TrafficSplit routing (Linkerd, OSM, ``smi:*``), as a pure function.

Follows the SMI ``TrafficSplit`` spec (``split.smi-spec.io`` v1alpha1..v1alpha3) and what Linkerd
and OSM document for it:

- a TrafficSplit takes the requests addressed to its *apex* Service, ``spec.service`` (a short
  name in the TrafficSplit's namespace, or a FQDN), from any caller;
- each request goes to one of ``spec.backends[]`` (Services of the same namespace) with
  probability ``weight / sum(weights)``: weights are relative, not percentages. In v1alpha1 a
  weight is a Kubernetes quantity (``"100"``, ``"500m"``, ``"1k"``: the spec's ``1``/``0m``
  examples), from v1alpha2 on an integer; the two forms are read alike, since the API server
  serves one object at every version it has;
- a backend with weight 0 gets nothing. When every weight is 0 the spec gives no meaning; the
  request has no backend to go to and is answered 503 (no healthy upstream), which is what a
  proxy with an empty weighted set does;
- v1alpha3's ``matches`` (HTTPRouteGroup references) are not read: Flagger's routers never
  write them (the golden corpus has none), so every request to the apex is split.

Nothing here does I/O; randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import random
import re
from collections.abc import Collection, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

from e2e.simulator.routing import Destination, Request, RouteDecision, service_key
from e2e.simulator.sources import Lookup, object_key
from flaggerpy import kube

__all__ = ["TRAFFIC_SPLITS", "SmiSource", "parse_quantity", "route_split", "split_weights"]

TRAFFIC_SPLITS = kube.Resource("split.smi-spec.io", "v1alpha1", "trafficsplits", "TrafficSplit")
"""The TrafficSplit at v1alpha1, the version Linkerd's router writes and the CRD stores;
v1alpha2 objects (OSM's) are served at it too, with their integer weights."""

_SUFFIXES = {
    "": Decimal(1), "m": Decimal("0.001"), "k": Decimal(10) ** 3, "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9, "T": Decimal(10) ** 12, "P": Decimal(10) ** 15,
    "E": Decimal(10) ** 18, "n": Decimal(10) ** -9, "u": Decimal(10) ** -6,
    "Ki": Decimal(2) ** 10, "Mi": Decimal(2) ** 20, "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40, "Pi": Decimal(2) ** 50, "Ei": Decimal(2) ** 60,
}
_QUANTITY = re.compile(r"\s*([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)\s*")


def parse_quantity(value: Any) -> Decimal:
    """A Kubernetes quantity (``"100"``, ``"500m"``, ``"1Ki"``, or a number) as a Decimal.

    ValueError for anything else: the API server would have rejected it.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a quantity: {value!r}")
    if isinstance(value, int | float):
        return Decimal(str(value))
    found = _QUANTITY.fullmatch(str(value))
    if found is None or found.group(2) not in _SUFFIXES:
        raise ValueError(f"not a quantity: {value!r}")
    try:
        return Decimal(found.group(1)) * _SUFFIXES[found.group(2)]
    except InvalidOperation:
        raise ValueError(f"not a quantity: {value!r}") from None


def split_weights(spec: Mapping[str, Any]) -> list[tuple[str, Decimal]]:
    """``(backend Service, weight)`` of each backend, in order; a missing weight counts 0."""
    result = []
    for backend in spec.get("backends") or []:
        name = str(backend.get("service") or "")
        if name:
            weight = backend.get("weight")
            result.append((name, max(Decimal(0), parse_quantity(weight or 0))))
    return result


def route_split(spec: Mapping[str, Any], rng: random.Random) -> RouteDecision:
    """One request through a TrafficSplit ``spec``: a backend drawn by relative weight, or no
    destination when every weight is 0 (the caller answers 503)."""
    weighted = [(name, weight) for name, weight in split_weights(spec) if weight > 0]
    chosen: Destination | None = None
    if weighted:
        name = rng.choices([n for n, _ in weighted], weights=[float(w) for _, w in weighted])[0]
        chosen = Destination(host=name, weight=1)
    return RouteDecision(rule_index=0, rule_name="", destination=chosen)


class SmiSource:
    """TrafficSplits, read as Linkerd's and OSM's proxies read them."""

    name: ClassVar[str] = "smi"
    resource: ClassVar[kube.Resource] = TRAFFIC_SPLITS

    def claims(self, obj: Mapping[str, Any], host: str, *, namespace: str,
               namespaces: Collection[str]) -> bool:
        apex = str((obj.get("spec") or {}).get("service") or "")
        if not apex:
            return False
        own = service_key(apex, namespace=object_key(obj).namespace, namespaces=namespaces)
        wanted = service_key(host, namespace=namespace, namespaces=namespaces)
        return own is not None and own == wanted

    def stream_host(self, obj: Mapping[str, Any]) -> str | None:
        """The apex Service, qualified by the TrafficSplit's namespace."""
        apex = str((obj.get("spec") or {}).get("service") or "")
        if not apex:
            return None
        return apex if "." in apex else f"{apex}.{object_key(obj).namespace}"

    def route(self, obj: Mapping[str, Any], request: Request, rng: random.Random, *,
              lookup: Lookup) -> RouteDecision | None:
        return route_split(obj.get("spec") or {}, rng)
