"""A real CloudWatch API on loopback: moto's server (``moto[server]`` from PyPI), for tests.

moto implements ``PutMetricData`` and ``GetMetricData`` (statistics per period, newest first;
of metric math only an expression naming another query's ``Id``) and answers some invalid
requests as the AWS API does, with a ValidationError and status 400: a query with neither
``MetricStat`` nor ``Expression``, a start time equal to the end time.
Its IAM emulation can be switched on (:meth:`LocalMoto.enforce_auth`): then a request must be
signed with an access key moto issued, whose user's policy allows the call, else 403.

moto records every request it gets (its own recorder, ``MOTO_ENABLE_RECORDING``) to a file
that :meth:`LocalMoto.requests` reads back, so a test checks what arrived on the wire: the
``X-Amz-Target``, the SigV4 ``Authorization`` (access key id and region) and the JSON body.

The server is a child process on a free port, stopped by pid; its data lives in memory.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3

from e2e.cluster.localcluster import free_port
from e2e.processes import LocalServer

__all__ = ["CLOUDWATCH_TARGET", "LocalMoto", "RecordedRequest"]

CLOUDWATCH_TARGET = "GraniteServiceVersion20100801"
"""The ``X-Amz-Target`` prefix of CloudWatch's JSON protocol."""

# Credentials of the test's own calls (PutMetricData, IAM), which moto accepts while its
# IAM emulation is off.
_ADMIN = {"aws_access_key_id": "AKIATESTADMIN0000000", "aws_secret_access_key": "admin"}


@dataclass(frozen=True)
class RecordedRequest:
    """One request as moto received it."""

    method: str
    url: str
    headers: Mapping[str, str]
    body: bytes

    @property
    def action(self) -> str:
        """``GetMetricData`` for ``X-Amz-Target: GraniteServiceVersion20100801.GetMetricData``."""
        return self.header("X-Amz-Target").rpartition(".")[2]

    def header(self, name: str) -> str:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return ""

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def credential_scope(self) -> tuple[str, str, str]:
        """``(access key id, region, service)`` of the SigV4 ``Authorization`` header."""
        authorization = self.header("Authorization")
        credential = authorization.split("Credential=", 1)[1].split(",", 1)[0]
        access_key, _date, region, service, _ = credential.split("/")
        return access_key, region, service


class LocalMoto(LocalServer):
    """Starts on ``start()`` (or ``with``); ``url`` is the endpoint for every AWS service."""

    def __init__(self) -> None:
        self.port = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def _recording(self) -> Path:
        assert self._dir is not None, "moto is not running"
        return Path(self._dir.name) / "recording.jsonl"

    def start(self, *, timeout: float = 60.0) -> LocalMoto:
        self._dir = tempfile.TemporaryDirectory(prefix="flaggerpy-moto-")
        self.port = free_port()
        env = {**os.environ, "MOTO_ENABLE_RECORDING": "True",
               "MOTO_RECORDER_FILEPATH": str(self._recording)}
        log_path = Path(self._dir.name) / "moto.log"
        with log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto exited: {log_path.read_text()}")
            if self._ready():
                return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError("moto did not start")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/moto-api/data.json", timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _post(self, path: str, body: bytes = b"") -> None:
        request = urllib.request.Request(f"{self.url}{path}", data=body, method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()

    # -- what arrived ---------------------------------------------------------------------------

    def requests(self, action: str | None = None) -> list[RecordedRequest]:
        """The requests moto got since the last :meth:`reset`, oldest first."""
        if not self._recording.exists():
            return []
        found = []
        for line in self._recording.read_text().splitlines():
            entry = json.loads(line)
            body = entry.get("body") or ""
            raw = base64.b64decode(body) if entry.get("body_encoded") else body.encode()
            request = RecordedRequest(method=entry["method"], url=entry["url"],
                                      headers=dict(entry["headers"]), body=raw)
            if action is None or request.action == action:
                found.append(request)
        return found

    def reset(self) -> None:
        """Forgets all data, IAM users and recorded requests; IAM checks off again."""
        self.allow_anonymous()
        self._post("/moto-api/reset")
        self._post("/moto-api/recorder/reset-recording")

    # -- data -----------------------------------------------------------------------------------

    def client(self, service: str, region: str = "us-east-1") -> Any:
        """A boto3 client of this server, for the test's own calls."""
        return boto3.client(service, region_name=region, endpoint_url=self.url, **_ADMIN)

    def put_metric(
            self,
            *,
            region: str,
            namespace: str,
            name: str,
            points: Iterable[tuple[datetime, float]],
            dimensions: Mapping[str, str] | None = None,
    ) -> None:
        """``PutMetricData`` of ``points`` (timestamp, value) for one metric."""
        dims = [{"Name": k, "Value": v} for k, v in (dimensions or {}).items()]
        data = [{"MetricName": name, "Timestamp": at, "Value": value, "Dimensions": dims}
                for at, value in points]
        self.client("cloudwatch", region).put_metric_data(Namespace=namespace, MetricData=data)

    # -- IAM ------------------------------------------------------------------------------------

    def user(self, name: str, *, actions: Sequence[str]) -> tuple[str, str]:
        """An IAM user allowed ``actions``; returns its (access key id, secret access key)."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        if actions:
            policy = {"Version": "2012-10-17",
                      "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": "*"}]}
            iam.put_user_policy(UserName=name, PolicyName="metrics",
                                PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return str(key["AccessKeyId"]), str(key["SecretAccessKey"])

    def enforce_auth(self) -> None:
        """From now on every request must be signed by a moto IAM user allowed to make it."""
        self._post("/moto-api/reset-auth", b"0")

    def allow_anonymous(self) -> None:
        """IAM checks off (moto's default)."""
        self._post("/moto-api/reset-auth", b"inf")
