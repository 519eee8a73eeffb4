"""The WAN flapping at volume (issue #15): the WAN emulator in front of S3 (moto) is cut and
restored at random, by resets and by blackholes, while reader processes read through
``fsspec.open``, while ``edgecache prefetch`` loads, and while pool nodes pass blocks to each
other (their peer links behind emulators that flap too). Every read is exact or a clear
``BackendUnavailableError``, never wrong bytes; once the link stays up, everything completes:
the readers read every object, the prefetch resumes and finishes, the nodes read everything.

The pool nodes and the dataset are the pool tests' (tests/pool/conftest.py)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from edgecache_testservers.wan import WANEmulator, WANProfile
from pool.conftest import Peer, make_dataset, read_all

READER = str(Path(__file__).with_name("readers.py"))
KiB = 1024
TIMEOUTS = {"connect_timeout": 1, "read_timeout": 2}
"""Short request timeouts: a blackholed request costs seconds, not the default's tens."""


class Flapper:
    """Cuts one of ``links`` at random (a reset or a blackhole) for 0.1-0.6 s, every 0.1-0.8 s,
    in a thread, until the ``with`` block ends; then every link is up. Counts the cuts."""

    def __init__(self, links: Sequence[WANEmulator], rng: random.Random) -> None:
        self.links = list(links)
        self.rng = rng
        self.cuts: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="flapper")

    def _run(self) -> None:
        while not self._stop.wait(self.rng.uniform(0.1, 0.8)):
            link = self.rng.choice(self.links)
            mode = self.rng.choice(["reset", "blackhole"])
            link.cut(mode)  # type: ignore[arg-type]
            self.cuts[mode] += 1
            self._stop.wait(self.rng.uniform(0.1, 0.6))
            link.restore()

    @property
    def total(self) -> int:
        return sum(self.cuts.values())

    def __enter__(self) -> Flapper:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()
        for link in self.links:
            link.restore()


def s3_options(wan: WANEmulator) -> dict[str, Any]:
    return {"endpoint_url": wan.endpoint, "key": "k", "secret": "s", **TIMEOUTS}


def test_readers_in_several_processes_while_the_wan_flaps(
    moto_endpoint: str, wan: WANEmulator, tmp_path: Path, reliability: Any
) -> None:
    rng = random.Random(21)
    data = make_dataset(moto_endpoint, files=reliability.scale(ci=6, long=16), file_bytes=300 * KiB)
    expected = {url.removeprefix("edgecache::"): sha for url, sha in data.sha256.items()}
    expect_file = tmp_path / "expected.json"
    expect_file.write_text(json.dumps(expected))
    # A cache smaller than the data, and no metadata trusted: every pass goes over the WAN.
    options = {
        "edgecache": {"ssd_quota": "512KiB", "mem_quota": "128KiB", "metadata_ttl": 0},
        "s3": s3_options(wan),
    }
    stop = tmp_path / "stop"
    command = [sys.executable, READER, "--options", json.dumps(options)]
    command += [str(tmp_path / "cache"), "64KiB", "--until", str(stop), str(expect_file)]
    readers = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(reliability.scale(ci=2, long=4))
    ]
    first: list[str] = []
    try:
        for proc in readers:  # flap once every reader reads (Python takes seconds to start)
            assert proc.stdout is not None
            first.append(proc.stdout.readline().decode())
        with Flapper([wan], rng) as flaps:
            threading.Event().wait(reliability.scale(ci=4, long=60))  # the flapping lasts this
    finally:
        stop.touch()
        outputs = [proc.communicate(timeout=300) for proc in readers]
    lines = first + [line for out, _ in outputs for line in out.decode().splitlines()]
    for _, err in outputs:
        assert "Traceback" not in err.decode(), err.decode()
    kinds = Counter(" ".join(line.split()[:1]) for line in lines)
    unclear = [line for line in lines if line.startswith("ERR ") and " unclear " in line]
    final = Counter(line.split()[1] for line in lines if line.startswith("FINAL "))
    reliability.iterations = kinds["OK"] + kinds["BAD"] + kinds["ERR"]
    reliability.faults_injected = flaps.total
    reliability.reads_checked = kinds["OK"] + kinds["BAD"] + sum(final.values())
    reliability.wrong_bytes = kinds["BAD"] + final["BAD"]
    reliability.data_lost = len(readers) * len(expected) - final["OK"]
    reliability.notes.update(clear_errors=kinds["ERR"] - len(unclear), cuts=dict(flaps.cuts))
    assert reliability.wrong_bytes == 0
    assert unclear == [], unclear[:5]
    assert final["OK"] == len(readers) * len(expected), [ln for ln in lines if "FINAL" in ln]
    assert flaps.total > 0 and kinds["OK"] > 0, kinds


def edgecache(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGECACHE_CACHE_DIR"}
    command = [sys.executable, "-m", "edgecache", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


def test_prefetch_while_the_wan_flaps_resumes_and_completes(
    moto_endpoint: str, wan: WANEmulator, tmp_path: Path, reliability: Any
) -> None:
    rng = random.Random(22)
    wan.set_profile(WANProfile(rtt_ms=2, mbit=40))  # a load lasts about as long as a few flaps
    data = make_dataset(moto_endpoint, files=reliability.scale(ci=8, long=24), file_bytes=600 * KiB)
    cache = tmp_path / "cache"
    backend = [a for key, value in s3_options(wan).items() for a in ("-o", f"{key}={value}")]
    common = ["--cache-dir", str(cache), "--set", "block_size=128KiB", *backend]
    url = f"s3://{data.bucket}/data"
    partial = 0
    with Flapper([wan], rng) as flaps:
        for _ in range(reliability.scale(ci=1, long=15)):
            run = edgecache("prefetch", url, "--parallel", "4", *common)
            assert run.returncode in (0, 1), run.stderr
            assert "Traceback" not in run.stderr and "unexpected" not in run.stderr, run.stderr
            if run.returncode == 1:
                partial += 1
                assert "\nfailed: " in run.stderr, run.stderr  # says which files failed
            reliability.iterations += 1
    before = wan.bytes_down
    final = edgecache("prefetch", url, "--parallel", "4", "--json", *common)
    assert final.returncode == 0, final.stderr
    resumed = wan.bytes_down - before
    summary = json.loads(final.stdout)
    reliability.faults_injected = flaps.total
    reliability.notes.update(partial_runs=partial, cuts=dict(flaps.cuts), resumed_bytes=resumed)
    # It resumes: what the flapped runs loaded is found cached, only the rest crosses the WAN
    # (plus listings and headers).
    assert summary["bytes_cached"] + summary["bytes_loaded"] == data.size, summary
    assert resumed <= summary["bytes_loaded"] + 64 * KiB, (resumed, summary)

    # The cut link proves it: every object reads back exactly from the cache alone.
    wan.cut("reset")
    expected = {u.removeprefix("edgecache::"): sha for u, sha in data.sha256.items()}
    expect_file = tmp_path / "expected.json"
    expect_file.write_text(json.dumps(expected))
    options = json.dumps({"s3": s3_options(wan)})
    command = [sys.executable, READER, "--options", options, str(cache), "128KiB"]
    reader = subprocess.run(
        [*command, "--expect", str(expect_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    oks = reader.stdout.count("OK ")
    reliability.reads_checked = oks + reader.stdout.count("BAD ")
    reliability.wrong_bytes = reader.stdout.count("BAD ")
    reliability.data_lost = len(expected) - oks
    assert reliability.wrong_bytes == 0
    assert oks == len(expected), reader.stderr


def test_peer_transfers_while_the_cloud_and_peer_links_flap(
    moto_endpoint: str, wan: WANEmulator, start_peers: Any, reliability: Any
) -> None:
    rng = random.Random(23)
    rounds = reliability.scale(ci=2, long=20)
    per_round = 3
    data = make_dataset(moto_endpoint, files=rounds * per_round, file_bytes=512 * KiB)
    peers: list[Peer] = start_peers(
        3,
        block_size=128 * KiB,
        s3=s3_options(wan),
        timeouts={"first_byte_seconds": 0.5, "cooldown_seconds": 1.0},
    )
    links = [WANEmulator(peer.address, WANProfile(rtt_ms=1, mbit=400)) for peer in peers]
    for link in links:
        link.start()
    try:
        # Each node sees itself at its own address and the others behind their links.
        for peer in peers:
            view = [peer.entry] + [
                f"{other.name}={link.host}:{link.port}"
                for other, link in zip(peers, links, strict=True)
                if other is not peer
            ]
            assert peer.call("peers", peers=view)["event"] == "ok"
            assert peer.call("list", urls=data.urls)["event"] == "ok"
        during: list[tuple[str, str]] = []
        with Flapper([wan, *links], rng) as flaps:
            for i in range(rounds):
                urls = data.urls[i * per_round : (i + 1) * per_round]
                during += [item for result in read_all(peers, urls) for item in result.items()]
                reliability.iterations += 1
        final = [item for result in read_all(peers, data.urls) for item in result.items()]
        stats = [p.call("stats") for p in peers]
    finally:
        for link in links:
            link.close()
    errors = [got for _, got in during if got.startswith("error:")]
    reliability.faults_injected = flaps.total
    reliability.reads_checked = len(during) - len(errors) + len(final)
    reliability.wrong_bytes = sum(
        1 for url, got in during + final if not got.startswith("error:") and got != data.sha256[url]
    )
    reliability.data_lost = sum(1 for url, got in final if got != data.sha256[url])
    reliability.notes.update(
        clear_errors=len(errors),
        cuts=dict(flaps.cuts),
        peer_hits=sum(s["peer_hits"] or 0 for s in stats),
    )
    assert [e for e in errors if not e.endswith(" clear")] == [], errors
    assert reliability.wrong_bytes == 0
    assert reliability.data_lost == 0, [item for item in final if item[1].startswith("error:")]
    assert len(final) == len(peers) * len(data.urls)
    assert reliability.notes["peer_hits"] > 0, stats  # blocks did travel between the nodes
