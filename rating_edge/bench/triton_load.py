"""Load test of a Triton-served package: N scanner-like clients send pairs at once, and the server's own
statistics say which batches its dynamic batcher formed (the point of one server for many scanners).

Loopback only by default: a load test pointed at someone else's server is a denial of service.
"""
from __future__ import annotations

import threading
import time
from urllib.parse import urlparse

import numpy as np

from rating_edge.errors import RatingEdgeError

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def _batch_stats(client, model: str, protocol: str) -> dict:
    """{batch size: executions} and the totals, from Triton's inference statistics."""
    st = client.get_inference_statistics(model, **({"as_json": True} if protocol == "grpc" else {}))
    ms = (st.get("model_stats") or [{}])[0]
    sizes = {}
    for b in ms.get("batch_stats", []):
        n = int(b.get("batch_size", 0))
        sizes[n] = int((b.get("compute_infer") or {}).get("count", 0))
    return {"inference_count": int(ms.get("inference_count", 0)), "execution_count": int(ms.get("execution_count", 0)),
            "batch_sizes": sizes}


def run_load(url: str, package, clients: int = 8, requests: int = 50, seed: int = 0,
             infer_timeout: float = 30.0, allow_remote: bool = False) -> dict:
    """Each of `clients` threads sends `requests` single pairs back to back through its own
    TritonRunner; returns throughput, latency percentiles and the batches the server formed."""
    from rating_edge.infer.triton import TritonRunner, parse_url

    if clients < 1 or requests < 1:
        raise RatingEdgeError("--clients and --requests must be at least 1")
    protocol, address = parse_url(url)
    host = urlparse(url).hostname
    if host not in LOOPBACK and not allow_remote:
        raise RatingEdgeError(f"bench --triton sends load only to this machine (127.0.0.1/localhost), not {host}")
    s = package.spec.input_size
    rng = np.random.default_rng(seed)
    pairs = [(rng.integers(0, 256, (1, s, s, 3), np.uint8), rng.integers(0, 256, (1, s, s, 3), np.uint8))
             for _ in range(8)]
    runners = [TritonRunner(package, url=url, infer_timeout=infer_timeout).activate() for _ in range(clients)]
    before = _batch_stats(runners[0].client, runners[0].model, protocol)
    lat = [[] for _ in range(clients)]
    errors = [0] * clients
    start = threading.Barrier(clients + 1)

    def work(i):
        r = runners[i]
        start.wait()
        for k in range(requests):
            gs, dop = pairs[(i + k) % len(pairs)]
            t0 = time.perf_counter()
            try:
                r.infer({"gs": gs, "doppler": dop})
            except RatingEdgeError:
                errors[i] += 1
                continue
            lat[i].append((time.perf_counter() - t0) * 1e3)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    # the server updates its statistics just after it answers: wait (briefly) until they count every pair
    t_end = time.monotonic() + 5
    while True:
        after = _batch_stats(runners[0].client, runners[0].model, protocol)
        done_now = sum(len(x) for x in lat)
        if after["inference_count"] - before["inference_count"] >= done_now or time.monotonic() > t_end:
            break
        time.sleep(0.1)
    for r in runners:
        r.deactivate()
    all_lat = np.concatenate([np.asarray(x, float) for x in lat if x]) if any(lat) else np.zeros(0)
    done = int(all_lat.size)
    execs = after["execution_count"] - before["execution_count"]
    infers = after["inference_count"] - before["inference_count"]
    sizes = {b: after["batch_sizes"].get(b, 0) - before["batch_sizes"].get(b, 0) for b in after["batch_sizes"]}
    pct = (lambda q: float(np.percentile(all_lat, q)) if done else float("nan"))
    return {"url": url, "protocol": protocol, "clients": clients, "requests_per_client": requests,
            "pairs": done, "errors": int(sum(errors)), "wall_s": wall, "pairs_per_s": done / wall if wall else 0.0,
            "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
            "server_executions": execs, "server_inferences": infers,
            "mean_batch": (infers / execs) if execs else float("nan"),
            "batch_sizes": {str(b): n for b, n in sorted(sizes.items()) if n}}
