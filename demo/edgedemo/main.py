"""The edge demo, phase by phase: what ``scripts/demo`` (``demo/run.sh``) runs.

    the cloud (this process)                       the edge site: nodepool np7632... (processes)
      OSS test server: the image dataset   <-WAN->   edge-node-1: edgecache hub + edgecache agent
      Kubernetes API test server           <-WAN->   edge-node-2: edgecache hub + edgecache agent
      edgecache controller (process)                 edge-node-3: edgecache hub + edgecache agent

Phases: (1) the ResNet pod reads straight from the cloud over the WAN (the baseline); (2) the seed
demo's Dataset, EdgeCacheRuntime and a DataLoad are applied with kubectl through node 1's hub and
the pool warms up; (3) the pod reads node 1's view; (4) node 2's view, filled through the pool
rather than the WAN; (5) the WAN is cut: reads and ``kubectl get`` still answer, a write is
refused; (6) the link returns and the site resyncs. A table, a JSON of the numbers and a PNG chart
come out at the end; the exit status is 0 only if every phase ran and behaved.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from edgecache.k8s.objects import API_VERSION, NODEPOOL_LABEL
from edgedemo import report
from edgedemo.cloud import Cloud, LinkBytes
from edgedemo.edgesite import (
    NODEPOOL,
    EdgeNode,
    Kubectl,
    free_port,
    has_agent,
    has_pool,
    write_peer_token,
)
from edgedemo.imageset import BUCKET, PREFIX, Manifest, digest
from edgedemo.processes import (
    Interrupted,
    Processes,
    http_text,
    ignore_signals,
    raise_on_signals,
    wait_until,
)
from edgedemo.profiles import PROFILES, Profile
from edgedemo.report import MiB, Phase

REPO = Path(__file__).resolve().parents[2]
DEMO_DIR = REPO / "demo"
EXAMPLES = REPO / "manifests" / "examples"
NAMESPACE, DATASET, DATALOAD = "default", "images", "images-warmup"
RESYNC_DATALOAD = "images-after-cut"
"""A DataLoad the cloud creates while the site is cut off: the agents run it once they resync."""
OFFLINE_WRITE = ("create", "configmap", "site-note", "--from-literal=note=written at the site")
"""A write a site operator might try during the cut (a POST: no read of the object first)."""
POOL_WAN_LIMIT = 1.1
"""Warming every node of the pool may cost at most this many times the dataset on the WAN."""


class Demo:
    def __init__(self, profile: Profile, work: Path, out: Path) -> None:
        self.profile = profile
        self.work = work
        self.out = out
        self.started = time.monotonic()
        self.processes = Processes(work / "logs")
        self.kubectl = Kubectl(work)
        self.phases: list[Phase] = []
        self.cloud: Cloud | None = None
        self.manifest: Manifest | None = None
        self.nodes: list[EdgeNode] = []

    # ------------------------------------------------------------------ output helpers

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:5.1f}s] {text}", flush=True)

    def step(self, title: str) -> None:
        print(f"\n== {title}", flush=True)

    def show(self, text: str, indent: str = "     ") -> None:
        for line in text.rstrip().splitlines():
            print(indent + line, flush=True)

    # -------------------------------------------------------------------- the scenario

    def run(self, cloud: Cloud) -> None:
        self.cloud = cloud
        self.setup_cloud()
        self.setup_site()
        self.baseline()
        self.warm_up()
        self.read_view("node-1", 0, "node 1 view, after the DataLoad", local_only=True)
        node_2 = "node 2 view, filled by the pool" if has_pool() else "node 2 view (no pool)"
        self.read_view("node-2", 1, node_2, local_only=True)
        self.offline()
        self.resync()

    def setup_cloud(self) -> None:
        cloud = self._cloud
        self.step(f"1. the cloud: object storage and the control plane, {self.link_text}")
        manifest = cloud.seed_dataset()
        self.manifest = manifest
        manifest.save(self.work / "manifest.json")
        images = manifest.images
        image_bytes = sum(manifest.files[k][0] for k in images)
        shard_bytes = manifest.total_bytes - image_bytes
        self.say(
            f"oss://{BUCKET}/{PREFIX}: {len(images)} images ({image_bytes / MiB:.1f} MiB) and "
            f"{len(manifest.files) - len(images)} shards ({shard_bytes / MiB:.1f} MiB), "
            f"{manifest.total_bytes / MiB:.1f} MiB in all"
        )
        admin = cloud.api_url
        self.kubectl.ok(admin, "apply", "-k", str(REPO / "manifests"))
        nodes = "".join(
            f"---\napiVersion: v1\nkind: Node\nmetadata:\n  name: edge-node-{i}\n"
            f"  labels: {{{NODEPOOL_LABEL}: {NODEPOOL}}}\n"
            for i in (1, 2, 3)
        )
        self.kubectl.ok(admin, "apply", "-f", "-", stdin=nodes)
        self.say(
            f"the cloud's admin applied manifests/ (CRDs, RBAC) and 3 Nodes of pool {NODEPOOL}"
        )
        controller = self.processes.start(
            "controller",
            [
                sys.executable,
                "-m",
                "edgecache",
                "controller",
                "--server",
                admin,
                "--no-leader-elect",
                "--health-listen",
                f"127.0.0.1:{(health := free_port())}",
                "--cache-dir",
                str(self.work / "controller-cache"),
                "--listing-refresh",
                "600",
            ],
        )
        wait_until(
            "the controller to be ready",
            lambda: http_text(f"http://127.0.0.1:{health}/readyz") is not None,
            timeout_seconds=60,
            processes=self.processes,
        )
        self.say(f"edgecache controller running in the cloud (pid {controller.process.pid})")

    def setup_site(self) -> None:
        cloud = self._cloud
        self.step("2. the edge site: 3 nodes, each with its edge hub and agent")
        self.nodes = [EdgeNode.create(f"edge-node-{i}", self.work) for i in (1, 2, 3)]
        for node in self.nodes:
            node.start_hub(self.processes, cloud.api_url_for_site)
        wait_until(
            "the hubs to be online",
            lambda: all(n.hub_mode() == "online" for n in self.nodes),
            timeout_seconds=60,
            processes=self.processes,
        )
        for node in self.nodes:
            self.say(
                f"{node.name}: hub {node.hub_url} (pid {node.hub.process.pid if node.hub else '-'})"
            )
        if not has_agent():
            self.say("edgecache agent: not in this build (issue #12): no views, no DataLoads")
            self.say("all edge processes up")
            return
        token = write_peer_token(self.work)
        for node in self.nodes:
            node.start_agent(self.processes, token)
        wait_until(
            "the agents to be healthy",
            lambda: all(n.agent_healthy() for n in self.nodes),
            timeout_seconds=60,
            processes=self.processes,
        )
        for node in self.nodes:
            peer = f", peers on 127.0.0.1:{node.peer_port}" if has_pool() else ""
            pid = node.agent.process.pid if node.agent else "-"
            self.say(f"{node.name}: agent (pid {pid}), view under {node.root}{peer}")
        if not has_pool():
            self.say("pool sharing (edgecache agent --peer-listen, issue #13): not in this build")
        else:
            # Until an agent has seen its peers' Leases it owns every block itself, and a
            # DataLoad started then would fetch those blocks over the WAN on every node.
            wait_until(
                "every agent to see the whole pool",
                lambda: all(n.pool_members() == len(self.nodes) for n in self.nodes),
                timeout_seconds=60,
                processes=self.processes,
            )
            self.say(f"the pool formed: every agent sees {len(self.nodes)} members (Leases)")
        self.say("all edge processes up")

    def baseline(self) -> None:
        cloud = self._cloud
        self.step(
            f"3. the ResNet pod reads {self.profile.reads} images straight from OSS over the WAN "
            "(what a site does today)"
        )
        phase = Phase("baseline", "cloud, over the WAN")
        self._reader(
            phase,
            ["--oss", cloud.oss_endpoint_for_site, "--key-id", cloud.access_key],
            env={"DEMO_OSS_SECRET": cloud.secret_key},
        )
        self.phases.append(phase)

    def warm_up(self) -> None:
        cloud, manifest, hub = self._cloud, self._manifest, self.nodes[0].hub_url
        self.step(
            "4. kubectl (through node 1's hub) applies the seed demo's Dataset and a DataLoad"
        )
        self.kubectl.ok(
            hub,
            "create",
            "secret",
            "generic",
            "mysecret",
            f"--from-literal=fs.oss.accessKeyId={cloud.access_key}",
            f"--from-literal=fs.oss.accessKeySecret={cloud.secret_key}",
        )
        phase = Phase("warm-up", "DataLoad, 3 nodes")
        self.phases.append(phase)
        before = cloud.link_bytes()
        started = time.monotonic()
        self.show(self.kubectl.ok(hub, "apply", "-f", "-", stdin=site_manifests(cloud)))
        wait_until(
            "the Dataset to be Bound",
            lambda: self._status("Dataset", DATASET).get("phase") == "Bound",
            timeout_seconds=self.profile.timeout_seconds,
            processes=self.processes,
        )
        self.say("the controller bound the Dataset: a PV pinned to the pool, the PVC 'images'")
        if not has_agent():
            phase.missing = True
            phase.notes.append("needs edgecache agent (issue #12)")
            self.show(self.kubectl.ok(hub, "get", "datasets,dataloads"))
            return
        phases_seen: tuple[str, ...] = ()
        progress_seen = ""
        deadline = started + self.profile.timeout_seconds

        def warmed() -> bool:
            loaded = self._status("DataLoad", DATALOAD).get("phase") in ("Complete", "Failed")
            return loaded and all(
                view_complete(n, NAMESPACE, DATASET, manifest) for n in self.nodes
            )

        while not warmed():
            self.processes.check_alive()
            if time.monotonic() > deadline:
                phase.fail(f"not warm after {self.profile.timeout_seconds:.0f} s")
                break
            got = self.kubectl(hub, "get", "datasets,dataloads")
            rows = table_rows(got.stdout) if got.returncode == 0 else []
            phases_now = tuple(row.get("PHASE", "") for row in rows)
            if rows and phases_now != phases_seen:
                # A phase moved: the whole table, as the user would see it.
                phases_seen = phases_now
                self.say(f"kubectl --server {hub} get datasets,dataloads")
                self.show(got.stdout)
            elif rows and (progress := progress_line(rows)) != progress_seen:
                progress_seen = progress
                self.say(progress)
            time.sleep(1.0)
        phase.seconds = time.monotonic() - started
        self._account(phase, before)
        self.show(self.kubectl.ok(hub, "get", "datasets,dataloads"))
        if self._status("DataLoad", DATALOAD).get("phase") != "Complete":
            phase.fail(f"DataLoad {self._status('DataLoad', DATALOAD).get('phase')}")
        for node in self.nodes:
            wrong = view_errors(node, NAMESPACE, DATASET, manifest)
            if wrong:
                phase.fail(f"{node.name}: {len(wrong)} files wrong or missing, e.g. {wrong[0]}")
        from_cloud = 0.0
        for node in self.nodes:
            sources = node.bytes_by_source()
            from_cloud += sources.get("backend", 0)
            if sources:
                failed = ", ".join(f"{n:.0f} {why}" for why, n in node.peer_failures().items())
                self.say(
                    f"{node.name}: blocks from the cloud {sources.get('backend', 0) / MiB:.1f} MiB,"
                    f" from pool peers {sources.get('peer', 0) / MiB:.1f} MiB"
                    + (f" (peer requests failed: {failed})" if failed else "")
                )
        if from_cloud:
            phase.notes.append(f"blocks from the cloud {from_cloud / manifest.total_bytes:.2f}x")
        ratio = phase.wan_data_bytes / manifest.total_bytes
        note = f"{ratio:.3f}x the dataset over the WAN for {len(self.nodes)} nodes"
        if ratio > POOL_WAN_LIMIT:
            why = "" if has_pool() else " (no pool sharing in this build: issue #13)"
            phase.fail(f"{note}, above {POOL_WAN_LIMIT}x{why}")
        else:
            phase.notes.append(note)
        self.say(f"warm-up: {phase.seconds:.1f} s; {note}")

    def read_view(self, name: str, index: int, title: str, *, local_only: bool) -> Phase:
        node = self.nodes[index]
        self.step(f"{len(self.phases) + 3}. the ResNet pod on {node.name} reads its view")
        phase = Phase(name, title)
        self.phases.append(phase)
        if not has_agent():
            phase.missing = True
            phase.notes.append("needs edgecache agent (issue #12)")
            self.say("skipped: no agent, so no view")
            return phase
        self._reader(phase, ["--view", str(node.view(NAMESPACE, DATASET))])
        if local_only and phase.wan_data_bytes > 0.05 * max(phase.bytes_read, 1):
            phase.fail(f"{phase.wan_data_bytes / MiB:.2f} MiB crossed the WAN for a local read")
        return phase

    def offline(self) -> None:
        cloud, hub = self._cloud, self.nodes[0].hub_url
        self.kubectl.ok(hub, "get", "datasets,pods")  # what kubectl reads online, the hub records
        self.step("7. the WAN link drops (a blackhole: nothing answers)")
        cloud.cut()
        noticed = wait_until(
            "every hub to notice the link is down",
            lambda: all(n.hub_mode() == "offline" for n in self.nodes),
            timeout_seconds=30,
            processes=self.processes,
        )
        self.say(f"all 3 hubs switched to offline after {noticed:.1f} s")
        # Meanwhile the cloud moves on: the site must see this once the link is back.
        assert cloud.api is not None
        cloud.api.create(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "shift-plan", "namespace": NAMESPACE},
                "data": {"written": "in the cloud while the site was offline"},
            }
        )
        if has_agent():
            # ... and decides more work for the site, which its agents only learn after the cut.
            cloud.api.create(
                {
                    "apiVersion": API_VERSION,
                    "kind": "DataLoad",
                    "metadata": {"name": RESYNC_DATALOAD, "namespace": NAMESPACE},
                    "spec": {
                        "dataset": {"name": DATASET, "namespace": NAMESPACE},
                        "target": [{"path": "/shards"}],
                        "policy": "Once",
                    },
                }
            )
        phase = Phase("offline", "node 3 view, WAN cut")
        self.phases.append(phase)
        if has_agent():
            self._reader(phase, ["--view", str(self.nodes[2].view(NAMESPACE, DATASET))])
        else:
            phase.missing = True
            phase.notes.append("view read needs edgecache agent (issue #12)")
        got = self.kubectl(hub, "get", "datasets,pods")
        self.say(f"kubectl --server {hub} get datasets,pods   (offline, from the hub's record)")
        self.show(got.stdout or got.stderr)
        if got.returncode != 0 or DATASET not in got.stdout or "resnet" not in got.stdout:
            phase.fail("kubectl get datasets,pods did not answer offline")
        write = self.kubectl(hub, *OFFLINE_WRITE)
        self.say(f"kubectl {' '.join(OFFLINE_WRITE)}   (a write, offline)")
        self.show(write.stderr or write.stdout)
        if write.returncode == 0:
            phase.fail("a write was accepted while offline")
        elif "503" not in write.stderr and "offline" not in write.stderr.lower():
            phase.fail("the offline write was refused without saying why")

    def resync(self) -> None:
        cloud, hub = self._cloud, self.nodes[0].hub_url
        self.step("8. the link returns; the site resyncs")
        phase = Phase("resync", "link back, resync")
        self.phases.append(phase)
        before = cloud.link_bytes()
        started = time.monotonic()
        cloud.restore()
        online = wait_until(
            "every hub to be online again",
            lambda: all(n.hub_mode() == "online" for n in self.nodes),
            timeout_seconds=30,
            processes=self.processes,
        )
        self.say(f"all 3 hubs online again after {online:.1f} s")
        write = self.kubectl(hub, *OFFLINE_WRITE)
        if write.returncode != 0:
            phase.fail(f"the write refused offline still fails: {write.stderr.strip()}")
        else:
            self.say("the write refused offline now succeeds: " + write.stdout.strip())
        got = self.kubectl(hub, "get", "configmap", "shift-plan", "-o", "jsonpath={.data.written}")
        if got.returncode != 0:
            phase.fail("the ConfigMap created in the cloud during the cut is not seen")
        else:
            self.say(f"the site sees what the cloud wrote during the cut: {got.stdout!r}")
        if has_agent():
            try:
                wait_until(
                    f"the DataLoad {RESYNC_DATALOAD} (created during the cut) to complete",
                    lambda: self._status("DataLoad", RESYNC_DATALOAD).get("phase") == "Complete",
                    timeout_seconds=self.profile.timeout_seconds,
                    processes=self.processes,
                )
                took = time.monotonic() - started
                self.say(
                    f"the agents picked up the DataLoad {RESYNC_DATALOAD} the cloud created during"
                    f" the cut; every node ran it and reported: Complete {took:.1f} s after the"
                    " link returned"
                )
            except RuntimeError as exc:
                phase.fail(str(exc))
        phase.seconds = time.monotonic() - started
        self._account(phase, before)
        self.show(self.kubectl.ok(hub, "get", "datasets,dataloads"))

    # -------------------------------------------------------------------------- helpers

    @property
    def _cloud(self) -> Cloud:
        assert self.cloud is not None
        return self.cloud

    @property
    def _manifest(self) -> Manifest:
        assert self.manifest is not None
        return self.manifest

    @property
    def link_text(self) -> str:
        return f"{self.profile.rtt_ms:.0f} ms RTT / {self.profile.mbit:.0f} Mbit/s WAN to the site"

    def _status(self, kind: str, name: str) -> dict[str, Any]:
        api = self._cloud.api
        assert api is not None
        try:
            status: dict[str, Any] = api.get(API_VERSION, kind, name, NAMESPACE).get("status") or {}
        except Exception:
            return {}
        return status

    def _account(self, phase: Phase, before: LinkBytes) -> None:
        spent = self._cloud.link_bytes() - before
        phase.wan_data_bytes = spent.data
        phase.wan_api_bytes = spent.api

    def _reader(self, phase: Phase, source: list[str], env: dict[str, str] | None = None) -> None:
        before = self._cloud.link_bytes()
        argv = [
            sys.executable,
            "-m",
            "edgedemo.reader",
            "--manifest",
            str(self.work / "manifest.json"),
            "--count",
            str(self.profile.reads),
            "--cpu-ms",
            str(self.profile.cpu_ms_per_image),
            *source,
        ]
        python_path = os.pathsep.join(filter(None, [str(DEMO_DIR), os.environ.get("PYTHONPATH")]))
        proc = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=self.profile.timeout_seconds,
            env={**os.environ, **(env or {}), "PYTHONPATH": python_path},
        )
        self._account(phase, before)
        try:
            result = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            phase.fail(f"the reader crashed: {proc.stderr.strip()[-300:]}")
            return
        phase.seconds, phase.images, phase.bytes_read = (
            result["seconds"],
            result["images"],
            result["bytes"],
        )
        if result["failed_count"]:
            phase.fail(f"{result['failed_count']} reads failed, e.g. {result['failed'][0]}")
        if result["wrong_count"]:
            phase.fail(f"{result['wrong_count']} images had wrong bytes")
        rate = phase.images_per_second or 0.0
        self.say(
            f"{phase.images}/{result['asked']} images in {phase.seconds:.1f} s "
            f"({rate:.1f} images/s), {phase.wan_data_bytes / MiB:.2f} MiB over the WAN"
            + ("" if phase.ok else "  FAILED: " + "; ".join(phase.notes))
        )

    # --------------------------------------------------------------------------- result

    def finish(self) -> int:
        self.step("results")
        print(report.table(self.phases))
        print(
            "   hit % = share of the bytes read that did not cross the WAN; "
            "WAN MiB = the data link (OSS), both ways"
        )
        self.out.mkdir(parents=True, exist_ok=True)
        json_path, png_path = self.out / "edge-demo.json", self.out / "edge-demo.png"
        manifest = self._manifest if self.manifest is not None else Manifest({})
        facts = {
            "profile": self.profile.name,
            "rtt_ms": self.profile.rtt_ms,
            "mbit": self.profile.mbit,
            "files": len(manifest.files),
            "dataset_bytes": manifest.total_bytes,
            "nodes": len(self.nodes),
            "agent": has_agent(),
            "pool": has_pool(),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        report.save_json(json_path, self.phases, facts)
        report.save_chart(png_path, self.phases, self.link_text, manifest.total_bytes)
        print(f"\nnumbers: {json_path}\nchart:   {png_path}")
        missing = [p.title for p in self.phases if p.missing]
        failed = [p.title for p in self.phases if not p.ok]
        if failed:
            print(f"\nFAILED: {', '.join(failed)}")
        if missing:
            print(f"NOT RUN (not in this build yet): {', '.join(missing)}")
        if failed or missing:
            return 1
        print(
            "\nevery phase behaved: exact bytes, offline reads served, the pool paid the WAN once"
        )
        return 0


def site_manifests(cloud: Cloud) -> str:
    """manifests/examples/ as the site applies them: the seed demo's OSS endpoint points at the
    embedded cloud, and the example DataLoad runs now (``Once``) instead of at 06:00 UTC."""
    docs: list[dict[str, Any]] = []
    for path in (EXAMPLES / "openyurt-fluid-demo.yaml", EXAMPLES / "dataload.yaml"):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for doc in docs:
        if doc["kind"] == "Dataset":
            doc["spec"]["mounts"][0]["options"]["fs.oss.endpoint"] = cloud.oss_endpoint_for_site
        if doc["kind"] == "DataLoad":
            doc["spec"]["policy"] = "Once"
            doc["spec"].pop("schedule", None)
    return yaml.safe_dump_all(docs, sort_keys=False)


def table_rows(text: str) -> list[dict[str, str]]:
    """The rows of ``kubectl get`` tables, as {column: cell}; columns are found where the header
    names start (names such as "UFS TOTAL" hold a space, cells never start mid-column)."""
    rows: list[dict[str, str]] = []
    starts: list[tuple[str, int]] = []
    for line in text.splitlines():
        if not line.strip():
            starts = []
            continue
        if not starts:
            names = [n for n in line.split("  ") if n.strip()]
            position = 0
            for name in names:
                position = line.index(name.strip(), position)
                starts.append((name.strip(), position))
            continue
        cells = {}
        for i, (name, start) in enumerate(starts):
            end = starts[i + 1][1] if i + 1 < len(starts) else len(line)
            cells[name] = line[start:end].strip()
        rows.append(cells)
    return rows


def progress_line(rows: list[dict[str, str]]) -> str:
    """One line of what moves during a load: the Dataset's cached bytes, the DataLoad's progress."""
    parts = []
    for row in rows:
        name = row.get("NAME", "").rpartition("/")[2]
        if "CACHED%" in row:
            share = (
                f" ({row['CACHED%']} of {row['UFS TOTAL']} on every node)"
                if row.get("CACHED%") and row.get("UFS TOTAL")
                else ""
            )
            parts.append(f"dataset {name}: {row.get('CACHED') or '0B'} cached in the pool{share}")
        elif "PROGRESS" in row:
            parts.append(f"dataload {name}: {row.get('PHASE', '?')} {row['PROGRESS']}")
    return "   ".join(parts)


def view_complete(node: EdgeNode, namespace: str, name: str, manifest: Manifest) -> bool:
    view = node.view(namespace, name)
    for key, (size, _) in manifest.files.items():
        try:
            if (view / key).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


def view_errors(node: EdgeNode, namespace: str, name: str, manifest: Manifest) -> list[str]:
    """Every file of the view read back and compared with the cloud's bytes."""
    view = node.view(namespace, name)
    wrong = []
    for key, expected in manifest.files.items():
        try:
            data = (view / key).read_bytes()
        except OSError as exc:
            wrong.append(f"{key}: {exc.strerror}")
            continue
        if (len(data), digest(data)) != expected:
            wrong.append(f"{key}: wrong bytes")
    return wrong


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="demo/run.sh",
        description="The edge demo: an OSS dataset and a control plane behind a slow WAN, a "
        "nodepool of three edge nodes (hub + agent each), the ResNet pod's reads phase by phase, "
        "the WAN cut and restored. Exit status 0 only if every phase behaved.",
    )
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="full",
        help="full: 1,500 images + 2 shards, 150 reads (2-3 min); test: a one-minute version",
    )
    parser.add_argument("--out", type=Path, default=DEMO_DIR / "out", help="JSON and PNG go here")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (logs, caches)"
    )
    parser.add_argument(
        "--work", type=Path, help="work directory, new or empty (default: a new temporary one)"
    )
    args = parser.parse_args(argv)
    if shutil.which("kubectl") is None:
        print(
            "demo: kubectl is not on PATH; the demo drives the site with the real kubectl",
            file=sys.stderr,
        )
        return 2
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
        if any(args.work.iterdir()):
            print(f"demo: --work {args.work} is not empty", file=sys.stderr)
            return 2
        work = args.work.resolve()
    else:
        work = Path(tempfile.mkdtemp(prefix="edgecache-demo-"))
    demo = Demo(PROFILES[args.profile], work, args.out.resolve())
    raise_on_signals()
    code = 1
    print(f"edgecache edge demo ({args.profile} profile); logs in {work}/logs", flush=True)
    (work / "logs").mkdir()
    try:
        with contextlib.ExitStack() as stack:
            cloud = stack.enter_context(Cloud(demo.profile))
            stack.callback(demo.processes.stop_all)
            stack.callback(ignore_signals)  # runs first: nothing cuts the clean-up short
            demo.run(cloud)
            code = demo.finish()
    except Interrupted as exc:
        print(f"\ndemo: stopped by {exc}; every process it started has been stopped", flush=True)
        code = 128 + exc.signum
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        print(f"\ndemo: FAILED: {exc}", flush=True)
        code = 1
    finally:
        ignore_signals()
        # A failure keeps its logs to look at; a Ctrl-C or success cleans up (caches and
        # views are several times the dataset).
        if args.keep or code == 1:
            print(f"work directory kept: {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return code
