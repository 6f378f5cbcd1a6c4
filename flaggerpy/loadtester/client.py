"""A client for the load tester's gate API, used by ``flaggerpy gate``.

It speaks the same HTTP API as Flagger's ``curl -d '{"name": "podinfo",
"namespace": "test"}' http://localhost:8080/gate/open``, so it works against
Flagger's load tester too, except for :meth:`GateClient.list`, which is a
flaggerpy addition.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

import aiohttp

from flaggerpy.errors import FlaggerError
from flaggerpy.loadtester.gates import GATE, Gate, GateKind

__all__ = ["GateClient", "GateClientError"]


class GateClientError(FlaggerError):
    """The load tester could not be reached, or refused the request."""


class GateClient:
    """Opens, closes, checks and lists gates on one load tester."""

    def __init__(
            self,
            url: str,  # the load tester's base URL, e.g. http://flagger-loadtester.test
            *,
            token: str = "",
            timeout: float = 10.0,  # seconds per request
    ) -> None:
        self._base = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=timeout))

    async def __aenter__(self) -> GateClient:
        return self

    async def __aexit__(
            self,
            exc_type: type[BaseException] | None,
            exc: BaseException | None,
            traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the HTTP session."""
        await self._session.close()

    async def open(self, kind: GateKind = GATE, *, name: str, namespace: str) -> None:
        """Opens a gate: the next check for this canary is approved."""
        await self._post(f"/{_prefix(kind)}/open", name=name, namespace=namespace,
                         expected={202})

    async def close(self, kind: GateKind = GATE, *, name: str, namespace: str) -> None:
        """Closes a gate: checks are refused until it is opened."""
        await self._post(f"/{_prefix(kind)}/close", name=name, namespace=namespace,
                         expected={202})

    async def check(self, kind: GateKind = GATE, *, name: str, namespace: str) -> bool:
        """Whether the gate is open (what the controller's webhook would be told)."""
        status, text = await self._post(f"/{_prefix(kind)}/check", name=name,
                                        namespace=namespace, expected={200, 403})
        if status == 403 and text.strip() != "Forbidden":
            # A refusal of the request itself (-namespace-regexp), not a closed gate.
            raise GateClientError(f"POST {self._base}/{_prefix(kind)}/check: 403 {text.strip()}")
        return status == 200

    async def list(self) -> list[Gate]:
        """Every gate the load tester knows, open or closed."""
        data = await self._request("GET", "/gate/list", json=None, expected={200})
        try:
            return [Gate(kind=item["kind"], name=item["name"], namespace=item["namespace"],
                         open=bool(item["open"])) for item in data["gates"]]
        except (KeyError, TypeError) as exc:
            raise GateClientError(f"{self._base}/gate/list: unexpected answer {data!r}") from exc

    async def _post(self, path: str, *, name: str, namespace: str,
                    expected: set[int]) -> tuple[int, str]:
        answer: tuple[int, str] = await self._request(
            "POST", path, json={"name": name, "namespace": namespace}, expected=expected,
            want_status=True)
        return answer

    async def _request(self, method: str, path: str, *, json: Any, expected: set[int],
                       want_status: bool = False) -> Any:
        url = self._base + path
        try:
            async with self._session.request(method, url, json=json) as response:
                text = await response.text()
                if response.status not in expected:
                    raise GateClientError(
                        f"{method} {url}: {response.status} {text.strip() or response.reason}")
                if want_status:
                    return response.status, text
                return await response.json(content_type=None)
        except aiohttp.ClientError as exc:
            raise GateClientError(f"{method} {url}: {exc}") from exc
        except TimeoutError as exc:
            raise GateClientError(f"{method} {url}: timed out") from exc
        except ValueError as exc:  # not JSON
            raise GateClientError(f"{method} {url}: answer is not JSON") from exc


def _prefix(kind: GateKind) -> str:
    return "gate" if kind == GATE else "rollback"
