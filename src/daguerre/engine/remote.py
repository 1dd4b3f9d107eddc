"""The remote engine: serve a public model name through another Luma-compatible API.

With `engine = "remote"` a model is drawn by an upstream deployment (Luma's hosted API, or another
daguerre), which makes this server a gateway that can burst to it. The engine submits the job
upstream (input images as base64), polls until it ends, and downloads the image:

* upstream 429: retried, waiting what `Retry-After` says (up to `retry_wait_cap_s`) with
  exponential backoff when it says nothing; still 429 after `max_retries` -> `rate_limited`;
* upstream 5xx or unreachable: retried the same way, then `generation_failed`;
* upstream 400/413/422: `invalid_request` with the upstream detail;
* upstream 401/402/403: `generation_failed` (the gateway's own key or balance is at fault);
* an upstream generation that fails keeps its failure code and reason.
"""

from __future__ import annotations

import base64
import io
import os
import time
from typing import TYPE_CHECKING, Any

import httpx

from daguerre.engine.base import EngineJob, StepHook
from daguerre.errors import JobFailure
from daguerre.wire import FailureCode, GenerationType

if TYPE_CHECKING:
    from PIL import Image


def _png_data(image: Image.Image) -> dict[str, str]:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return {"data": base64.b64encode(buffer.getvalue()).decode(), "media_type": "image/png"}


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class RemoteEngine:
    def __init__(
        self,
        name: str,
        base_url: str,
        api_key: str | None = None,
        api_key_env: str | None = None,
        model: str | None = None,
        poll_s: float = 2.0,
        timeout_s: float = 600.0,
        max_retries: int = 3,
        retry_wait_cap_s: float = 60.0,
    ) -> None:
        key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
        if not key:
            raise JobFailure(
                FailureCode.GENERATION_FAILED,
                f"Model '{name}': no API key for the upstream {base_url} "
                "(set `api_key_env` to a variable that holds it)",
            )
        self.name = name
        self.model = model or name
        self.poll_s = poll_s
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.retry_wait_cap_s = retry_wait_cap_s
        self.client = httpx.Client(
            base_url=base_url.rstrip("/") + "/",
            headers={"Authorization": f"Bearer {key}", "User-Agent": "daguerre-remote/1"},
            timeout=httpx.Timeout(60.0, connect=5.0),
        )

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call with retries on 429, 5xx and connection errors; raises the JobFailure it maps to."""
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = self.client.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                if last:
                    raise JobFailure(FailureCode.GENERATION_FAILED, f"Upstream unreachable: {exc}") from exc
                time.sleep(min(self.retry_wait_cap_s, 0.5 * 2**attempt))
                continue
            if response.status_code == 429 or response.status_code >= 500:
                if last:
                    if response.status_code == 429:
                        raise JobFailure(
                            FailureCode.RATE_LIMITED,
                            f"Upstream kept answering 429 after {self.max_retries} retries: "
                            + _detail(response),
                        )
                    raise JobFailure(FailureCode.GENERATION_FAILED, f"Upstream error {response.status_code}")
                wait = _retry_after(response)
                time.sleep(min(self.retry_wait_cap_s, wait if wait and wait > 0 else 0.5 * 2**attempt))
                continue
            if response.status_code in (400, 413, 422):
                raise JobFailure(
                    FailureCode.INVALID_REQUEST, f"Upstream refused the request: {_detail(response)}"
                )
            if response.status_code >= 400:
                raise JobFailure(
                    FailureCode.GENERATION_FAILED,
                    f"Upstream answered {response.status_code}: {_detail(response)}",
                )
            return response
        raise AssertionError("unreachable")

    def generate(self, job: EngineJob, on_step: StepHook) -> Image.Image:
        from PIL import Image as PILImage

        body: dict[str, Any] = {
            "prompt": job.prompt,
            "model": self.model,
            "type": job.type.value,
            "output_format": "png",
        }
        if job.style != "auto":
            body["style"] = job.style
        if job.type == GenerationType.IMAGE:
            body["aspect_ratio"] = job.aspect_ratio
        elif job.source is not None:
            body["source"] = _png_data(job.source)
        if job.references:
            body["image_ref"] = [_png_data(image) for image in job.references]
        generation = self._request("POST", "generations", json=body).json()
        deadline = time.monotonic() + self.timeout_s
        polls = max(1, int(self.timeout_s / self.poll_s))
        step = 0
        while generation["state"] not in ("completed", "failed"):
            if time.monotonic() > deadline:
                raise JobFailure(
                    FailureCode.GENERATION_FAILED, f"Upstream did not finish in {self.timeout_s:g} s"
                )
            step += 1
            on_step(min(step, polls), polls)  # lets the worker stop a job whose lease was lost
            time.sleep(self.poll_s)
            generation = self._request("GET", f"generations/{generation['id']}").json()
        if generation["state"] == "failed":
            code = generation.get("failure_code") or FailureCode.GENERATION_FAILED.value
            try:
                failure = FailureCode(code)
            except ValueError:
                failure = FailureCode.GENERATION_FAILED
            raise JobFailure(failure, generation.get("failure_reason") or None)
        try:
            data = httpx.get(generation["output"][0]["url"], timeout=60.0).raise_for_status().content
            image = PILImage.open(io.BytesIO(data))
            image.load()
        except (httpx.HTTPError, OSError, KeyError, IndexError) as exc:
            raise JobFailure(
                FailureCode.OUTPUT_NOT_FOUND, f"Upstream output could not be downloaded: {exc}"
            ) from exc
        return image.convert("RGB")


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", response.text))
    except ValueError:
        return response.text[:200]
