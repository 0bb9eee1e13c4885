"""Bounded load test of a running `wolofmrl serve`: concurrent clients for a fixed duration, then it stops.

    python eval/server_load.py --url http://127.0.0.1:8000 --clients 8 --seconds 10 [--requests N] [--audio q.wav]
                               [--search]

Each client (a thread with its own HTTP connection, standard library only) sends requests back to back until
`--seconds` have passed or `--requests` have been sent in all (whichever comes first):
POST /v1/embeddings with `--batch` French sentences (or, with --audio, one base64 input_audio item; with
--search, POST /v1/search). Prints requests/s, items/s, p50/p99 latency, and checks that every request sent got
an answer: `sent == ok + errors`, `lost == 0` (a lost request = no HTTP response: a reset, a timeout).
Exit status 1 if any request was lost or answered with a 5xx.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import threading
import time
from urllib.parse import urlparse

SENTENCES = ["La pluie tombera demain sur Dakar.", "Le marché ouvre à huit heures.",
             "Le président a parlé à la radio ce matin.", "Les enfants vont à l'école à pied."]


def _request_body(args) -> tuple[str, bytes]:
    if args.audio:
        with open(args.audio, "rb") as f:
            item = {"type": "input_audio", "input_audio": {"data": base64.b64encode(f.read()).decode(),
                                                           "format": "wav"}}
    if args.search:
        query = item if args.audio else SENTENCES[0]
        return "/v1/search", json.dumps({"query": query, "k": 10}).encode()
    inputs = [item] if args.audio else (SENTENCES * (args.batch // len(SENTENCES) + 1))[:args.batch]
    return "/v1/embeddings", json.dumps({"input": inputs, "model": "wolofmrl", "dimensions": args.dim}).encode()


def _client(url, path: str, body: bytes, stop_at: float, timeout: float, out: dict, lock: threading.Lock,
            budget: list):
    parsed = urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
    latencies, sent, ok, client_errors, server_errors, lost = [], 0, 0, 0, 0, 0
    while time.perf_counter() < stop_at:
        with lock:  # budget[0]: requests left to send, all clients together
            if budget[0] <= 0:
                break
            budget[0] -= 1
        start = time.perf_counter()
        sent += 1
        try:
            conn.request("POST", path, body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
        except (OSError, http.client.HTTPException):
            lost += 1
            conn.close()
            conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=timeout)
            continue
        latencies.append(time.perf_counter() - start)
        if resp.status < 400:
            ok += 1
        elif resp.status < 500:
            client_errors += 1
        else:
            server_errors += 1
    conn.close()
    with lock:
        out["latencies"] += latencies
        for key, value in (("sent", sent), ("ok", ok), ("client_errors", client_errors),
                           ("server_errors", server_errors), ("lost", lost)):
            out[key] += value


def run(url: str, clients: int = 4, seconds: float = 5.0, batch: int = 4, dim: int | None = None,
        audio: str | None = None, search: bool = False, timeout: float = 60.0,
        max_requests: int | None = None) -> dict:
    """Run the load test; returns {"sent", "ok", "client_errors", "server_errors", "lost", "requests_per_s",
    "items_per_s", "p50_ms", "p99_ms", "seconds", "clients"}. Stops after `seconds` or `max_requests` sent
    (requests in flight finish)."""
    if clients < 1 or seconds <= 0 or (max_requests is not None and max_requests < 1):
        raise ValueError("clients must be >= 1, seconds > 0 and max_requests (if given) >= 1")
    args = argparse.Namespace(audio=audio, search=search, batch=batch, dim=dim)
    path, body = _request_body(args)
    out = {"latencies": [], "sent": 0, "ok": 0, "client_errors": 0, "server_errors": 0, "lost": 0}
    lock = threading.Lock()
    start = time.perf_counter()
    budget = [max_requests if max_requests is not None else float("inf")]
    threads = [threading.Thread(target=_client, args=(url, path, body, start + seconds, timeout, out, lock, budget))
               for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    lat = sorted(out.pop("latencies"))
    pick = (lambda q: round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 1)) if lat else (lambda q: None)
    items = 1 if (audio or search) else batch
    return {**out, "clients": clients, "seconds": round(wall, 2), "requests_per_s": round(out["ok"] / wall, 2),
            "items_per_s": round(out["ok"] * items / wall, 2), "p50_ms": pick(0.50), "p99_ms": pick(0.99),
            "endpoint": path}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default http://127.0.0.1:8000)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--seconds", type=float, default=10.0, help="stop after this long (default 10)")
    p.add_argument("--requests", type=int, default=None, help="stop after this many requests in all (default: none)")
    p.add_argument("--batch", type=int, default=4, help="texts per /v1/embeddings request")
    p.add_argument("--dim", type=int, default=None)
    p.add_argument("--audio", default=None, help="send this audio file instead of text")
    p.add_argument("--search", action="store_true", help="load /v1/search instead of /v1/embeddings")
    args = p.parse_args(argv)
    r = run(args.url, args.clients, args.seconds, args.batch, args.dim, args.audio, args.search,
            max_requests=args.requests)
    print(f"{r['endpoint']}: {r['clients']} clients x {r['seconds']} s: {r['requests_per_s']} req/s "
          f"({r['items_per_s']} items/s), p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms; sent {r['sent']}, ok {r['ok']}, "
          f"4xx {r['client_errors']}, 5xx {r['server_errors']}, lost {r['lost']}")
    return 1 if r["lost"] or r["server_errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
