"""Triton Inference Server backend: the scanner box keeps capture, screen understanding, pairing and
overlay; inference goes to a shared server that batches requests from many scanners.

The runner refuses a server model that is not the package it was given (the model hash in the
repository's config, written by `rating-edge triton repo`), so a scanner never shows grades of another
model. When the server goes away, is too slow (`infer_timeout`) or restarts, `infer` raises
`EngineUnavailable` at once (the live feed shows its banner) and reconnects on a later call, backing off
from 0.5 s to 8 s between attempts so a dead server costs the loop nothing.
"""
from __future__ import annotations

import time
from urllib.parse import urlparse

import numpy as np

from rating_edge.errors import RatingEdgeError
from rating_edge.infer.base import OUTPUTS, Runner
from rating_edge.infer.errors import EngineMismatch, EngineUnavailable

MODEL_NAME = "rating"
HASH_PARAM = "rating_edge_model_hash"
BACKOFF_S = (0.5, 8.0)


def parse_url(url: str | None) -> tuple[str, str]:
    """(protocol, host:port) from grpc://HOST:PORT or http://HOST:PORT."""
    if not url:
        raise RatingEdgeError("the triton backend needs the server: --url grpc://HOST:8001 or http://HOST:8000")
    u = urlparse(url)
    if u.scheme not in ("grpc", "http") or not u.hostname:
        raise RatingEdgeError(f"--url {url!r}: use grpc://HOST:PORT or http://HOST:PORT")
    try:
        port = u.port or (8001 if u.scheme == "grpc" else 8000)
    except ValueError:
        raise RatingEdgeError(f"--url {url!r}: the port is not a number") from None
    return u.scheme, f"{u.hostname}:{port}"


class TritonRunner(Runner):
    """A package served by Triton (`rating-edge triton repo`), with the runner contract."""

    name = "triton"
    backend = "triton"

    def __init__(self, package, variant: str | None = None, url: str | None = None, model: str = MODEL_NAME,
                 infer_timeout: float = 5.0, check_identity: bool = True, wait_for_server: bool = False):
        """`wait_for_server`: the live runtime's choice. A server that is down when the scanner box starts
        is then connected to on a later pair (with the same back-off) instead of leaving the whole session
        without AI; commands that answer once (verify, bench) keep the default and fail at once."""
        super().__init__(package)
        if variant not in (None, "default"):
            raise RatingEdgeError(f"the triton backend runs what the server serves; variant {variant!r} is chosen "
                                  "when the repository is written (rating-edge triton repo)")
        if not infer_timeout or infer_timeout <= 0 or infer_timeout != infer_timeout:
            raise RatingEdgeError("--infer-timeout must be a positive number of seconds")
        self.protocol, self.address = parse_url(url)
        self.url = url
        self.model = model
        self.infer_timeout = float(infer_timeout)
        self.check_identity = check_identity
        self.wait_for_server = wait_for_server
        self.client = None
        self.config = {}
        self._mod = None
        self._retry_at = 0.0
        self._backoff = BACKOFF_S[0]
        self.reconnects = 0
        self.failures = 0

    # -- connection -------------------------------------------------------------------------------
    def _module(self):
        if self._mod is None:
            try:
                if self.protocol == "grpc":
                    import tritonclient.grpc as mod
                else:
                    import tritonclient.http as mod
            except ImportError:
                raise EngineUnavailable("the triton backend needs tritonclient: pip install 'rating-edge[triton]'") from None
            self._mod = mod
        return self._mod

    def _connect(self):
        mod = self._module()
        try:
            if self.protocol == "grpc":
                client = mod.InferenceServerClient(self.address)
            else:
                client = mod.InferenceServerClient(self.address, connection_timeout=self.infer_timeout,
                                                   network_timeout=self.infer_timeout)
            if not client.is_server_live():
                raise EngineUnavailable(f"Triton at {self.url} is not live")
            if not client.is_model_ready(self.model):
                raise EngineUnavailable(f"Triton at {self.url} has no ready model {self.model!r}")
            cfg = client.get_model_config(self.model, **({"as_json": True} if self.protocol == "grpc" else {}))
        except EngineUnavailable:
            raise
        except Exception as e:  # noqa: BLE001 - tritonclient raises its own and socket errors
            raise EngineUnavailable(f"Triton at {self.url} unreachable ({_first_line(e)})") from None
        cfg = cfg.get("config", cfg)
        self._check_model(cfg)
        self.client, self.config = client, cfg

    def _check_model(self, cfg: dict):
        params = {k: (v or {}).get("string_value") for k, v in (cfg.get("parameters") or {}).items()}
        served = params.get(HASH_PARAM)
        if self.check_identity and served != self.package.model_hash:
            raise EngineMismatch(f"Triton model {self.model!r} at {self.url} serves model {served or 'of unknown identity'}, "
                                 f"not this package ({self.package.model_hash}); write its repository with "
                                 f"`rating-edge triton repo {self.package.path} REPO` and reload the server")
        names_in = {i["name"] for i in cfg.get("input", [])}
        names_out = {o["name"] for o in cfg.get("output", [])}
        if not {"gs", "doppler"} <= names_in or not set(OUTPUTS) <= names_out:
            raise EngineMismatch(f"Triton model {self.model!r} has inputs {sorted(names_in)} and outputs "
                                 f"{sorted(names_out)}; expected gs, doppler -> {', '.join(OUTPUTS)}")

    def _drop(self, why: str) -> EngineUnavailable:
        self.failures += 1
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001 - a dead connection may not close cleanly
                pass
        self.client = None
        self._retry_at = time.monotonic() + self._backoff
        msg = f"Triton at {self.url}: {why}; retrying in {self._backoff:.1f} s"
        self._backoff = min(self._backoff * 2, BACKOFF_S[1])
        return EngineUnavailable(msg)

    # -- runner contract --------------------------------------------------------------------------
    def _activate(self):
        try:
            self._connect()
        except EngineUnavailable as e:
            if not self.wait_for_server:
                raise
            self._drop(_first_line(e))  # first pairs show the banner; later ones reconnect

    def _deactivate(self):
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: BLE001
                pass
        self.client = None

    def _infer(self, gs, dop):
        if self.client is None:
            if time.monotonic() < self._retry_at:
                raise EngineUnavailable(f"Triton at {self.url} unavailable; next retry in "
                                        f"{self._retry_at - time.monotonic():.1f} s")
            try:
                self._connect()
            except EngineUnavailable as e:
                raise self._drop(_first_line(e)) from None
            self.reconnects += 1
            self._backoff = BACKOFF_S[0]
        mod = self._module()
        inputs = []
        for name, x in (("gs", gs), ("doppler", dop)):
            t = mod.InferInput(name, list(x.shape), "UINT8")
            t.set_data_from_numpy(x)
            inputs.append(t)
        outputs = [mod.InferRequestedOutput(n) for n in OUTPUTS]
        try:
            if self.protocol == "grpc":
                res = self.client.infer(self.model, inputs, outputs=outputs, client_timeout=self.infer_timeout)
            else:
                res = self.client.infer(self.model, inputs, outputs=outputs)
        except Exception as e:  # noqa: BLE001 - timeouts, resets, server errors
            raise self._drop(_first_line(e)) from None
        return {n: np.asarray(res.as_numpy(n)) for n in OUTPUTS}

    def describe(self) -> dict:
        return {**super().describe(), "url": self.url, "model": self.model,
                "reconnects": self.reconnects, "failures": self.failures}


def _first_line(e: Exception) -> str:
    s = str(e).strip()
    return (s.splitlines()[0][:200] if s else type(e).__name__)
