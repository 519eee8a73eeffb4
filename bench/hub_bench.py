"""Edge hub benchmark: online overhead against direct access, offline LIST, restart, memory.

Three processes, as in production: the API server (``edgecache_testservers.kubeapi``, seeded with
10,000 pods in three namespaces of 1k, 5k and 4k), the hub (``python -m edgecache.hub``), and
this script as the client (``http.client`` with keep-alive, one request at a time, User-Agent
``edgecache-agent`` so the hub records). Measured:

* online GET of one pod and LIST of 1k and 5k pods, direct and through the hub (p50, p99),
  requests interleaved so drift hits both sides alike;
* offline LIST of 5k pods (upstream stopped), p50;
* restart-to-serving: a new hub process on the 10k-object store with the upstream down, from
  ``exec`` to the first successful answer (GET, and a full LIST of 5k);
* hub RSS with 10k objects stored (online after recording, and offline after the restart).

``--hung-link TRIALS`` measures only this instead (results: bench/results/hub_hung_link.json):
a hub with its default health settings behind the WAN emulator (30 ms RTT) whose link is
blackholed (packets swallowed, nothing reset) at a random moment of the probe cycle; the time
to the switch offline, and for a read sent into the hang to be answered from the store.

Run: ``.venv/bin/python bench/hub_bench.py`` (about a minute). Results: bench/results/hub.json.
Targets (design section 5): online p50 <= 1.3x direct; offline LIST 5k p50 <= 100 ms;
restart-to-serving <= 1 s.
"""

from __future__ import annotations

import argparse
import gzip
import http.client
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import print_table, ratio, scratch_dir, write_results

AGENT = "edgecache-agent/bench"

_UPSTREAM = """
import asyncio, signal, sys
from edgecache_testservers.kubeapi import KubeAPIServer, objects

async def main(port, latency_ms):
    server = KubeAPIServer(port=port, bookmark_interval_seconds=60.0)
    sizes = {"ns1k": 1000, "ns5k": 5000, "ns4k": 4000}
    server.seed(objects.namespace(ns) for ns in sizes)
    for ns, count in sizes.items():
        server.seed(objects.pods(count, ns, prefix=ns))
    await server.astart()
    print(server.url, flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, done.set)
    # SIGUSR1 switches on the emulated WAN round trip (added before every answer).
    loop.add_signal_handler(
        signal.SIGUSR1, lambda: setattr(server, "latency_seconds", latency_ms / 1000)
    )
    await done.wait()
    await server.astop()

asyncio.run(main(int(sys.argv[1]), float(sys.argv[2])))
"""


def _start_upstream(latency_ms: float) -> tuple[subprocess.Popen[str], str]:
    process = subprocess.Popen(
        [sys.executable, "-c", _UPSTREAM, "0", str(latency_ms)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


# The floor for any aiohttp-based proxy: read the request, forward it, answer with the body.
_MINIMAL_PROXY = """
import sys, aiohttp
from aiohttp import web

async def handle(request):
    headers = {"User-Agent": request.headers.get("User-Agent", ""), "Accept": "application/json"}
    async with request.app["session"].get(sys.argv[1] + request.path_qs, headers=headers) as up:
        return web.Response(status=up.status, body=await up.read(), content_type="application/json")

async def start(app):
    app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

async def stop(app):
    await app["session"].close()

app = web.Application()
app.on_startup.append(start)
app.on_cleanup.append(stop)
app.router.add_route("*", "/{tail:.*}", handle)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=None,
            print=lambda *args: print("ready", flush=True))
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_minimal_proxy(upstream: str) -> tuple[subprocess.Popen[str], str]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", _MINIMAL_PROXY, upstream, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.readline()
    return process, f"http://127.0.0.1:{port}"


def _floor(direct: Client, minimal: Client, hub: Client, rounds: int) -> dict[str, float]:
    """GET p50 of direct, a 15-line aiohttp proxy and the hub, interleaved."""
    times: dict[str, list[float]] = {"direct": [], "minimal_aiohttp_proxy": [], "hub": []}
    path = CASES["GET pod"]
    for _ in range(rounds):
        times["direct"].append(direct.timed(path))
        times["minimal_aiohttp_proxy"].append(minimal.timed(path))
        times["hub"].append(hub.timed(path))
    result = {f"{k}_p50_ms": statistics.median(v) * 1000 for k, v in times.items()}
    print_table(
        "GET p50 floor on loopback: what any aiohttp proxy costs (ms)",
        ["direct", "minimal aiohttp proxy", "hub"],
        [[result["direct_p50_ms"], result["minimal_aiohttp_proxy_p50_ms"], result["hub_p50_ms"]]],
    )
    return result


def _start_hub(cache_dir: str, upstream: str) -> tuple[subprocess.Popen[str], str, str, float]:
    started = time.perf_counter()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "edgecache.hub", "--server", upstream),
            *("--cache-dir", cache_dir, "--listen", "127.0.0.1:0"),
            *("--health-listen", "127.0.0.1:0", "--components", "*", "--probe-interval", "0.2"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    match = re.search(r"serving (http://\S+) \(health (http://\S+)\)", line)
    if match is None:
        raise SystemExit(f"hub did not start: {line!r}")
    return process, match.group(1), match.group(2), started


class Client:
    """One keep-alive HTTP connection; like client-go it accepts gzip (and inflates it)."""

    gzip = True

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.connection = http.client.HTTPConnection(host, int(port), timeout=30)

    def get(self, path: str) -> tuple[int, bytes]:
        headers = {"User-Agent": AGENT, "Accept": "application/json"}
        if self.gzip:
            headers["Accept-Encoding"] = "gzip"
        self.connection.request("GET", path, headers=headers)
        response = self.connection.getresponse()
        body = response.read()
        if response.getheader("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return response.status, body

    def timed(self, path: str) -> float:
        started = time.perf_counter()
        status, _ = self.get(path)
        elapsed = time.perf_counter() - started
        if status != 200:
            raise SystemExit(f"GET {path}: HTTP {status}")
        return elapsed


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _rss_mib(pid: int) -> dict[str, float]:
    fields: dict[str, float] = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def _import_time() -> float:
    """Seconds a fresh interpreter needs to import the hub: the part of restart-to-serving
    that is Python's, measured under the same machine load (best of three)."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import edgecache.hub.command"], check=True)
        times.append(time.perf_counter() - started)
    return min(times)


def _wait_readyz(health_url: str, word: str, within_seconds: float = 30.0) -> None:
    client = Client(health_url)
    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        try:
            _, body = client.get("/readyz")
            if word in body.decode():
                return
        except OSError:
            client = Client(health_url)
        time.sleep(0.05)
    raise SystemExit(f"hub never became {word}")


CASES = {
    "GET pod": "/api/v1/namespaces/ns1k/pods/ns1k-00042",
    "LIST 1k pods": "/api/v1/namespaces/ns1k/pods",
    "LIST 5k pods": "/api/v1/namespaces/ns5k/pods",
}


def _compare(direct: Client, proxied: Client, rounds: dict[str, int], label: str) -> dict[str, Any]:
    results: dict[str, Any] = {}
    rows = []
    for case, path in CASES.items():
        direct_times: list[float] = []
        hub_times: list[float] = []
        for _ in range(rounds[case]):
            direct_times.append(direct.timed(path))
            hub_times.append(proxied.timed(path))
        entry = {
            "rounds": rounds[case],
            "direct_p50_ms": statistics.median(direct_times) * 1000,
            "direct_p99_ms": _pct(direct_times, 0.99) * 1000,
            "hub_p50_ms": statistics.median(hub_times) * 1000,
            "hub_p99_ms": _pct(hub_times, 0.99) * 1000,
        }
        entry["p50_ratio"] = ratio(entry["hub_p50_ms"], entry["direct_p50_ms"])
        entry["p99_ratio"] = ratio(entry["hub_p99_ms"], entry["direct_p99_ms"])
        results[case] = entry
        rows.append(
            [
                case,
                entry["direct_p50_ms"],
                entry["hub_p50_ms"],
                entry["p50_ratio"],
                entry["direct_p99_ms"],
                entry["hub_p99_ms"],
                entry["p99_ratio"],
            ]
        )
    print_table(
        f"online, {label}: direct vs through the hub (ms; target p50 ratio <= 1.3)",
        ["case", "direct p50", "hub p50", "ratio", "direct p99", "hub p99", "ratio"],
        rows,
    )
    return results


def hung_link(trials: int) -> dict[str, Any]:
    """Blackhole the link ``trials`` times; seconds to offline and to the waiting read's answer."""
    import asyncio
    import random

    import aiohttp
    from edgecache_testservers.kubeapi import KubeAPIServer, objects
    from edgecache_testservers.wan import LINK_30MS_100MBIT, WANEmulator

    from edgecache.hub import HealthSettings, HubServer, HubSettings

    health = HealthSettings()
    pods = "/api/v1/namespaces/default/pods"
    headers = {"User-Agent": "kubelet/bench"}

    async def run(cache_dir: str) -> tuple[list[float], list[float]]:
        detected: list[float] = []
        answered: list[float] = []
        with KubeAPIServer() as api:
            api.seed(objects.pods(20))
            async with WANEmulator(api.url, LINK_30MS_100MBIT) as wan:
                settings = HubSettings(cache_dir=Path(cache_dir))
                settings.upstream.servers = [wan.endpoint]
                settings.listen.address = settings.listen.health_address = "127.0.0.1:0"
                async with HubServer(settings) as hub, aiohttp.ClientSession(hub.url) as http:
                    for _ in range(trials):
                        async with http.get(pods, headers=headers) as response:
                            await response.read()  # recorded, and success evidence
                        assert hub.recorder is not None
                        await hub.recorder.drain()
                        await asyncio.sleep(random.uniform(0, health.probe_interval_seconds))
                        wan.cut("blackhole")
                        cut_at = time.monotonic()
                        waiting = asyncio.ensure_future(http.get(pods, headers=headers))
                        await hub.health.wait_for(False, within_seconds=30)
                        detected.append(time.monotonic() - cut_at)
                        response = await waiting
                        await response.read()
                        assert response.status == 200
                        answered.append(time.monotonic() - cut_at)
                        wan.restore()
                        await hub.health.wait_for(True, within_seconds=30)
        return detected, answered

    with scratch_dir("hub-hung") as cache_dir:
        detected, answered = asyncio.run(run(cache_dir))
    return {
        "trials": trials,
        "health_settings": {
            "probe_interval_seconds": health.probe_interval_seconds,
            "probe_timeout_seconds": health.probe_timeout_seconds,
            "retry_interval_seconds": health.retry_interval_seconds,
            "failures_to_offline": health.failures_to_offline,
        },
        "detect_offline_s": {
            "p50": statistics.median(detected),
            "max": max(detected),
            "all": [round(x, 3) for x in detected],
        },
        "waiting_read_answered_s": {"p50": statistics.median(answered), "max": max(answered)},
        "target_s": 5.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--get-rounds", type=int, default=400)
    parser.add_argument("--list1k-rounds", type=int, default=60)
    parser.add_argument("--list5k-rounds", type=int, default=25)
    parser.add_argument(
        "--wan-rtt-ms", type=float, default=10.0, help="emulated upstream round trip, 2nd pass"
    )
    parser.add_argument(
        "--no-gzip", action="store_true", help="clients do not ask for gzip (hub still does)"
    )
    parser.add_argument(
        "--hung-link",
        type=int,
        metavar="TRIALS",
        help="only measure hung-link detection, this many times",
    )
    args = parser.parse_args()
    if args.hung_link:
        hung = {
            "command": "python bench/hub_bench.py " + " ".join(sys.argv[1:]),
            "load_average_at_start": os.getloadavg(),
            **hung_link(args.hung_link),
        }
        print_table(
            "hung link (blackhole) detection",
            ["measure", "p50 (s)", "max (s)", "target"],
            [
                [
                    "to offline",
                    hung["detect_offline_s"]["p50"],
                    hung["detect_offline_s"]["max"],
                    "<= 5",
                ],
                [
                    "waiting read answered",
                    hung["waiting_read_answered_s"]["p50"],
                    hung["waiting_read_answered_s"]["max"],
                    "-",
                ],
            ],
        )
        write_results("hub_hung_link", hung)
        return
    Client.gzip = not args.no_gzip
    rounds = {
        "GET pod": args.get_rounds,
        "LIST 1k pods": args.list1k_rounds,
        "LIST 5k pods": args.list5k_rounds,
    }
    results: dict[str, Any] = {
        "command": "python bench/hub_bench.py " + " ".join(sys.argv[1:]),
        "client_accepts_gzip": not args.no_gzip,
        "load_average_at_start": os.getloadavg(),
        "online": {},
    }
    with scratch_dir("hub") as cache_dir:
        upstream, upstream_url = _start_upstream(args.wan_rtt_ms)
        hub, hub_url, health_url, _ = _start_hub(cache_dir, upstream_url)
        try:
            direct, proxied = Client(upstream_url), Client(hub_url)
            for path in (*CASES.values(), "/api/v1/namespaces/ns4k/pods"):
                for _ in range(3):  # warm both sides; the hub records the 10k objects
                    direct.timed(path)
                    proxied.timed(path)
            time.sleep(1.0)  # let the hub finish writing the recorded lists
            rss_online = _rss_mib(hub.pid)
            minimal, minimal_url = _start_minimal_proxy(upstream_url)
            try:
                results["get_floor_loopback"] = _floor(
                    direct, Client(minimal_url), proxied, args.get_rounds
                )
            finally:
                minimal.send_signal(signal.SIGTERM)
                minimal.wait(timeout=30)
            for latency in (0.0, args.wan_rtt_ms):
                if latency:
                    upstream.send_signal(signal.SIGUSR1)
                    time.sleep(0.2)
                label = "loopback" if not latency else f"{latency:g} ms upstream RTT"
                results["online"][label] = _compare(direct, proxied, rounds, label)

            # Offline: stop the upstream, wait for the switch, LIST 5k from the store.
            upstream.send_signal(signal.SIGTERM)
            upstream.wait(timeout=30)
            _wait_readyz(health_url, "offline")
            proxied = Client(hub_url)
            offline_times = [
                proxied.timed(CASES["LIST 5k pods"]) for _ in range(args.list5k_rounds)
            ]
            results["offline_list_5k"] = {
                "p50_ms": statistics.median(offline_times) * 1000,
                "p99_ms": _pct(offline_times, 0.99) * 1000,
                "target_p50_ms": 100,
            }
        finally:
            hub.send_signal(signal.SIGTERM)
            hub.wait(timeout=30)
            if upstream.poll() is None:
                upstream.kill()

        # Restart while offline: the upstream is down, the store holds 10k pods.
        store_bytes = sum(
            p.stat().st_size for p in Path(cache_dir).glob("hub.sqlite*") if p.is_file()
        )
        dead = upstream_url  # nothing listens there any more
        restart_process, url, _health, started = _start_hub(cache_dir, dead)
        try:
            client = Client(url)
            while True:
                try:
                    status, _ = client.get(CASES["GET pod"])
                    if status == 200:
                        break
                except OSError:
                    client = Client(url)
            first_get = time.perf_counter() - started
            client.timed(CASES["LIST 5k pods"])
            first_list = time.perf_counter() - started
            offline_times = [client.timed(CASES["LIST 5k pods"]) for _ in range(10)]
            rss_offline = _rss_mib(restart_process.pid)
        finally:
            restart_process.send_signal(signal.SIGTERM)
            restart_process.wait(timeout=30)
        results["restart_to_serving"] = {
            "objects_stored": 10_000,
            "store_bytes": store_bytes,
            "first_get_s": first_get,
            "first_list_5k_s": first_list,
            "after_restart_list_5k_p50_ms": statistics.median(offline_times) * 1000,
            "target_s": 1.0,
            "note": "from exec of a new hub process (Python start-up and imports included)",
            "python_and_imports_only_s": _import_time(),
        }
        results["memory_mib"] = {
            "online_after_recording_10k": rss_online,
            "offline_after_restart_serving_5k_lists": rss_offline,
        }
    print_table(
        "offline and restart",
        ["measure", "value", "target"],
        [
            ["offline LIST 5k p50 (ms)", results["offline_list_5k"]["p50_ms"], "<= 100"],
            ["restart to first GET (s)", results["restart_to_serving"]["first_get_s"], "<= 1"],
            ["restart to first LIST 5k (s)", results["restart_to_serving"]["first_list_5k_s"], "-"],
            [
                "  of which Python start-up + imports (s)",
                results["restart_to_serving"]["python_and_imports_only_s"],
                "-",
            ],
            ["hub RSS online, 10k stored (MiB)", rss_online.get("VmRSS"), "-"],
            ["hub peak RSS online (MiB)", rss_online.get("VmHWM"), "-"],
            ["hub RSS after offline restart (MiB)", rss_offline.get("VmRSS"), "-"],
            ["store size (MiB)", store_bytes / 2**20, "-"],
        ],
    )
    results["load_average_at_end"] = os.getloadavg()
    print(f"load average: {results['load_average_at_start']} -> {results['load_average_at_end']}")
    write_results("hub", results)


if __name__ == "__main__":
    main()
