"""Lease-based leader election, as client-go's ``leaderelection`` package does it.

One replica holds a ``coordination.k8s.io/v1`` Lease and renews it; the others
(hot standbys, caches warm) try to take it every ``retry_period`` and succeed
once it has not been renewed for ``leaseDurationSeconds``. The Lease is only
ever changed with an update conditional on its resourceVersion, so two
candidates racing for it cannot both win.

Three timing rules carry the safety argument, as in client-go:

- A standby judges expiry by *its own clock*: it notes when it last saw the
  Lease record change, and waits ``leaseDurationSeconds`` from then. The
  holder's ``renewTime`` is written for humans, never trusted across clocks.
- The leader counts a renewal from the moment it *sent* the request. If it
  cannot renew for ``renew_deadline`` (< lease duration) it gives up:
  :meth:`LeaderElector.is_leader` turns False right then, by the clock, even
  while a request is still hanging -- so a partitioned leader stops writing
  (its fenced client refuses) well before a standby may take over -- and
  :meth:`LeaderElector.start` raises :class:`LeadershipLostError`, which stops
  the process (Flagger exits on lost leadership too).
- On a clean stop the leader releases the Lease (empty holder, duration 1 s)
  so a standby takes over in about a second instead of a lease duration.

Defaults are Flagger's: Lease ``flagger-leader-election``, 60 s lease, 15 s
renew deadline, 5 s retry period, identity ``<hostname>_<uuid>``.
"""

from __future__ import annotations

import asyncio
import datetime
import random
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from flaggerpy import kube
from flaggerpy.errors import FlaggerError

log = structlog.get_logger(__name__)

DEFAULT_LEASE_NAME = "flagger-leader-election"


class LeadershipLostError(FlaggerError):
    """The Lease could not be renewed in time, or another replica holds it now."""


def default_identity() -> str:
    """``<hostname>_<uuid>``, as Flagger names its candidates: unique even across restarts."""
    return f"{socket.gethostname()}_{uuid.uuid4()}"


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The fields of a Lease spec that leader election reads and writes."""

    holder: str = ""
    lease_duration: int = 0
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=str(spec.get("holderIdentity") or ""),
            lease_duration=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def to_spec(self) -> dict[str, Any]:
        return {
            "holderIdentity": self.holder,
            "leaseDurationSeconds": self.lease_duration,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


class LeaderElector:
    """Campaigns for a Lease, then holds it; see the module docstring for the rules.

    ``elected`` is set once leadership is acquired. Pass :meth:`is_leader` as
    the ``may_write`` fence of the client the controllers write with
    (``client.fenced(elector.is_leader)``); the elector itself must be given an
    unfenced client.
    """

    needs_leader_election: bool = False

    def __init__(
            self,
            client: kube.KubeClient,
            *,
            namespace: str,
            name: str = DEFAULT_LEASE_NAME,
            identity: str | None = None,
            lease_duration: float = 60.0,
            renew_deadline: float = 15.0,
            retry_period: float = 5.0,
            release_on_cancel: bool = True,
    ) -> None:
        if not lease_duration > renew_deadline > retry_period > 0:
            raise ValueError("need lease_duration > renew_deadline > retry_period > 0")
        self._client = client
        self._namespace = namespace
        self._name = name
        self.identity = identity or default_identity()
        self._lease_duration = lease_duration
        self._renew_deadline = renew_deadline
        self._retry_period = retry_period
        self._release_on_cancel = release_on_cancel
        self.elected = asyncio.Event()
        self._leading = False
        self._renewed_at = float("-inf")  # loop time when the last successful renew was sent
        self._observed: LeaseRecord | None = None
        self._observed_at = 0.0  # loop time when _observed last changed
        self._observed_version = ""
        self._log = log.bind(lease=f"{namespace}/{name}", identity=self.identity)

    @property
    def leader(self) -> str:
        """The holder last seen on the Lease ("" if none or unknown)."""
        return self._observed.holder if self._observed else ""

    def is_leader(self) -> bool:
        """True while this replica holds the Lease *and* renewed it within ``renew_deadline``.

        Clock-based: it turns False when the deadline passes, without waiting
        for a request to fail. Never True again after leadership was lost.
        """
        if not self._leading:
            return False
        return self._now() - self._renewed_at < self._renew_deadline

    async def start(self) -> None:
        """Campaigns until elected, then renews until cancelled or lost.

        Raises LeadershipLostError on loss. On cancellation, releases the Lease
        (if ``release_on_cancel``) and re-raises.
        """
        try:
            await self._acquire()
            await self._renew_until_lost()
        except asyncio.CancelledError:
            if self._leading and self._release_on_cancel:
                await self._release()
            raise
        finally:
            self._leading = False

    # -- phases ----------------------------------------------------------------

    async def _acquire(self) -> None:
        self._log.info("leader_election_started")
        while True:
            if await self._try_acquire_or_renew():
                self._leading = True
                self.elected.set()
                self._log.info("leader_elected")
                return
            # client-go's JitterFactor 1.2: candidates do not retry in lockstep.
            await asyncio.sleep(self._retry_period * (1 + random.random() * 1.2))

    async def _renew_until_lost(self) -> None:
        while True:
            await asyncio.sleep(self._retry_period)
            deadline = self._renewed_at + self._renew_deadline
            while True:
                remaining = deadline - self._now()
                if remaining <= 0:
                    self._lost(f"failed to renew within {self._renew_deadline:g}s")
                try:
                    async with asyncio.timeout(remaining):
                        renewed = await self._try_acquire_or_renew()
                except TimeoutError:
                    renewed = False
                if renewed:
                    break
                if self._observed is not None and self._observed.holder not in ("", self.identity):
                    self._lost(f"lease taken by {self._observed.holder}")
                await asyncio.sleep(min(self._retry_period, max(0.0, deadline - self._now())))

    def _lost(self, why: str) -> None:
        self._leading = False
        self._log.error("leader_lost", reason=why)
        raise LeadershipLostError(f"Lease {self._namespace}/{self._name}: {why}")

    async def _release(self) -> None:
        if self._observed is None or self._observed.holder != self.identity:
            return
        now = _micro_time()
        record = LeaseRecord(holder="", lease_duration=1, acquire_time=now, renew_time=now,
                             transitions=self._observed.transitions)
        body = self._lease_body(record)
        body["metadata"]["resourceVersion"] = self._observed_version  # never clobber a new holder
        try:
            async with asyncio.timeout(self._retry_period):
                await self._client.replace(kube.LEASES, body)
        except (kube.KubeError, TimeoutError) as exc:
            self._log.warning("leader_release_failed", error=str(exc))
        else:
            self._log.info("leader_released")

    # -- one round of client-go's tryAcquireOrRenew ----------------------------

    async def _try_acquire_or_renew(self) -> bool:
        sent_at = self._now()
        now = _micro_time()
        try:
            lease = await self._client.get(kube.LEASES, self._name, namespace=self._namespace)
        except kube.NotFoundError:
            record = LeaseRecord(self.identity, self._lease_seconds(), now, now, 0)
            try:
                created = await self._client.create(kube.LEASES, self._lease_body(record))
            except kube.AlreadyExistsError:
                return False
            except kube.KubeError as exc:
                self._log.warning("leader_lease_create_failed", error=str(exc))
                return False
            self._observe(created, sent_at)
            self._renewed_at = sent_at
            return True
        except kube.KubeError as exc:
            self._log.warning("leader_lease_get_failed", error=str(exc))
            return False

        record = LeaseRecord.from_lease(lease)
        self._observe(lease, self._now())
        held_by_other = record.holder not in ("", self.identity)
        if held_by_other and self._observed_at + record.lease_duration > self._now():
            return False

        if record.holder == self.identity:
            new = LeaseRecord(self.identity, self._lease_seconds(), record.acquire_time or now,
                              now, record.transitions)
        else:
            new = LeaseRecord(self.identity, self._lease_seconds(), now, now,
                              record.transitions + 1)
        body = self._lease_body(new)
        body["metadata"]["resourceVersion"] = kube.resource_version(lease)
        try:
            updated = await self._client.replace(kube.LEASES, body)
        except kube.ConflictError:
            return False
        except kube.KubeError as exc:
            self._log.warning("leader_lease_update_failed", error=str(exc))
            return False
        if record.holder != self.identity:
            self._log.info("leader_lease_acquired", previous=record.holder or None)
        self._observe(updated, sent_at)
        self._renewed_at = sent_at
        return True

    def _observe(self, lease: Mapping[str, Any], at: float) -> None:
        version = kube.resource_version(lease)
        if version != self._observed_version:
            self._observed = LeaseRecord.from_lease(lease)
            self._observed_version = version
            self._observed_at = at

    def _lease_body(self, record: LeaseRecord) -> dict[str, Any]:
        return {
            "apiVersion": kube.LEASES.api_version,
            "kind": kube.LEASES.kind,
            "metadata": {"name": self._name, "namespace": self._namespace},
            "spec": record.to_spec(),
        }

    def _lease_seconds(self) -> int:
        return max(1, round(self._lease_duration))

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


def _micro_time() -> str:
    """A MicroTime, the format of Lease acquireTime/renewTime."""
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
