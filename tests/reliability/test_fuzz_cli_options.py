"""Every sub-command's flags fuzzed in a fresh ``edgecache`` process per call (issue #15), as a
user runs them: hypothesis draws a command (cat, ls, stats, prefetch, hub, controller, agent),
flags of that command (read from the click definitions, so a new flag is fuzzed too) and unknown
ones, values of the right and wrong type, backend options (``-o``). Each call ends with exit 0, 1
or 2 and, when it fails, one ``edgecache: error:`` line last, never a traceback or an
"unexpected" error; a service that starts serving is stopped with SIGTERM and exits cleanly.
Nothing is written outside the call's scratch directory.

Only 127.0.0.1 is ever a target: every address flag draws from loopback forms and malformed
spellings (never a host name to resolve), object stores get a closed local endpoint and dummy
keys, HOME, KUBECONFIG and the cache directories point into the scratch directory.
In process, at higher volume, ``-o`` options are fuzzed in test_fuzz_inputs.py."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from itertools import count
from pathlib import Path
from typing import Any

import click
import pytest
from fuzzlib import FUZZ, examples
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.cli import main

CLOSED = "http://127.0.0.1:1"
SERVICES = ("hub", "controller", "agent")
ADDRESS_OPTIONS = {
    "--server",
    "--listen",
    "--health-listen",
    "--peer-listen",
    "--advertise",
    "--peers",
    "--csi-endpoint",
}
ADDRESSES = [
    CLOSED,
    f"{CLOSED},http://127.0.0.1:2",
    "http://127.0.0.1:99999",
    "http://[::1]:1",
    "https://127.0.0.1:1",
    "ftp://127.0.0.1:1",
    "http://",
    "127.0.0.1:0",
    "127.0.0.1:1",
    "[::1]:0",
    "127.0.0.1:-1",
    "127.0.0.1:notaport",
    "a=127.0.0.1:1",
    "a=127.0.0.1:1,b=127.0.0.1:2",
    "=127.0.0.1:1",
    ":::",
    "",
    "127.0.0.1:" + "9" * 400,
    "unix:///nonexistent-dir/csi.sock",
    "unix://",
]
NUMBERS = ["0", "-1", "1", "0.001", "1e999", "nan", "inf", "-inf", "abc", "9" * 30, ""]
LOCAL_URLS = ["file://{s}/data/plain.txt", "file://{s}/data/", "memory://x/y", "{s}/bundle.yaml"]
STORE_URLS = ["s3://b/k", "oss://b/k"]
STORE_OPTIONS = {
    "s3": ["-o", f"endpoint_url={CLOSED}", "-o", "key=k", "-o", "secret=s", "-o", "retries=1"],
    "oss": ["-o", f"endpoint={CLOSED}", "-o", "key=k", "-o", "secret=s", "-o", "retries=1"],
}
OPTION_KEYS = ["auto_mkdir", "retries", "max_paths", "anon", "use_ssl", "block_size", "skip", ""]


def options_of(command: str) -> list[click.Option]:
    found = main.get_command(click.Context(main), command)
    assert found is not None, command
    return [p for p in found.params if isinstance(p, click.Option)]


S = "\x01S\x01"
"""Placeholder of the call's scratch directory in drawn command lines (replaced after the
draw, so what hypothesis draws never depends on where it runs)."""


def path_values(scratch: str) -> st.SearchStrategy[str]:
    # Inside the scratch directory only: a directory flag creates what it names.
    return st.sampled_from(
        [
            f"{scratch}/d",
            f"{scratch}/bundle.yaml",
            f"{scratch}/data/plain.txt",
            f"{scratch}/no/such/file",
            f"{scratch}/" + "n" * 300,
            "",
            "/dev/null",
            "/proc/self/status",
        ]
    )


@st.composite
def calls(draw: st.DrawFn) -> list[str]:
    """One command line: a command, its base flags (scratch directories, loopback), drawn
    flags and values, then for object-store URLs the closed endpoint and dummy keys."""
    scratch = S
    command = draw(st.sampled_from(["cat", "ls", "stats", "prefetch", *SERVICES]))
    base: list[str] = {
        "hub": ["--cache-dir", f"{scratch}/hub", "--listen", "127.0.0.1:0"],
        "controller": ["--cache-dir", f"{scratch}/ctl", "--no-leader-elect"],
        "agent": [
            "--node-name=n1",
            f"--root={scratch}/root",
            f"--cache-dir={scratch}/agent",
            f"--kubelet-dir={scratch}/kubelet",
        ],
    }.get(command, ["--cache-dir", f"{scratch}/cache"])
    if command in SERVICES:
        base += ["--server", CLOSED, "--health-listen", "127.0.0.1:0"]
    args = [command, *base]
    if command in ("cat", "ls", "prefetch"):
        url = draw(st.sampled_from(LOCAL_URLS + STORE_URLS)).format(s=scratch)
        args.append(url)
    for _ in range(draw(st.integers(0, 4))):
        option = draw(st.sampled_from([*options_of(command), None]))
        if option is None:
            args.append(draw(st.sampled_from(["--nope", "-x", "--", "-", "--help", "--cache-dir"])))
            continue
        flag = draw(st.sampled_from(option.opts + option.secondary_opts))
        if option.is_flag:
            args.append(flag)
            continue
        name = option.opts[-1]
        if name in ADDRESS_OPTIONS:
            value = draw(st.sampled_from(ADDRESSES))
        elif isinstance(option.type, click.Path) or name == "--cache-dir":
            value = draw(path_values(scratch))
        elif isinstance(option.type, click.types.IntParamType | click.types.FloatParamType):
            value = draw(st.sampled_from(NUMBERS))
        elif isinstance(option.type, click.Choice):
            value = draw(st.sampled_from([*map(str, option.type.choices), "nope", ""]))
        elif name in ("-o", "--option", "--set"):
            key = draw(st.sampled_from(OPTION_KEYS) | st.text("abcdefgh_.", max_size=10))
            value = f"{key}={draw(st.sampled_from(NUMBERS) | st.text(max_size=12))}"
            if name == "--set" and value.split("=", 1)[0] == "cache_dir":
                value = f"cache_dir={scratch}/set-cache"
        else:
            value = draw(st.sampled_from(NUMBERS) | st.text(max_size=20))
        args += [flag, value] if draw(st.booleans()) else [f"{flag}={value}"]
    for protocol, extra in STORE_OPTIONS.items():
        if any(a.startswith(f"{protocol}://") for a in args):
            args += extra  # last, so they win over any drawn -o endpoint/keys
    return args


def environment(scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "OSS_", "ALIBABA_"))}
    env.update(
        HOME=str(scratch / "home"),
        XDG_CACHE_HOME=str(scratch / "home/.cache"),
        KUBECONFIG=str(scratch / "kubeconfig"),
        AWS_EC2_METADATA_DISABLED="true",
        PYTHONUNBUFFERED="1",
    )
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return env


def run(args: list[str], scratch: Path) -> tuple[int, str]:
    """(exit code, stderr) of one call; a service serving after its first line (or still
    retrying after a few seconds) is stopped with SIGTERM."""
    err_path = scratch / "stderr"
    with err_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "edgecache", *args],
            cwd=scratch,
            env=environment(scratch),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    try:
        try:
            process.wait(timeout=8 if args[0] in SERVICES else 60)
        except subprocess.TimeoutExpired:
            assert args[0] in SERVICES, f"{args[0]} did not end in 60 s"
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
    return process.returncode, err_path.read_text(errors="replace")


CALLS = count()
BUG = re.compile(r"unexpected \w+(Error|Exception)\b|a bug: please report")


@pytest.fixture(scope="module")
def scratch_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-options")


# About 3.5 s a call on a loaded machine: the default 300 s per test fits CI, not the long run.
@pytest.mark.timeout(120 + 15 * examples(4))
@settings(FUZZ, max_examples=examples(4))
@given(data=st.data())
def test_any_flags_of_any_command_in_a_fresh_process(
    scratch_root: Path, reliability: Any, data: st.DataObject
) -> None:
    scratch = scratch_root / f"call-{next(CALLS)}"
    (scratch / "data").mkdir(parents=True)
    (scratch / "home").mkdir()
    (scratch / "data" / "plain.txt").write_bytes(b"plain\n")
    (scratch / "bundle.yaml").write_text("kind: Dataset\nspec: [")
    (scratch / "kubeconfig").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\ncontexts: [{name: c, context: "
        f"{{cluster: c, user: u}}}}]\nclusters: [{{name: c, cluster: {{server: '{CLOSED}'}}}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
    )
    # No argument can hold a NUL (the OS takes C strings): those are fuzzed in process.
    drawn = data.draw(calls(), label="command line")
    args = [a.replace(S, str(scratch)).replace("\x00", "") for a in drawn]
    system = {d: set(os.listdir(d)) for d in ("/", "/mnt", os.getcwd())}
    code, stderr = run(args, scratch)
    reliability.iterations += 1
    reliability.bad_inputs += 1
    assert "Traceback" not in stderr, stderr[-3000:]
    assert code in (0, 1, 2, -signal.SIGTERM), (code, stderr[-3000:])
    lines = [line for line in stderr.splitlines() if line.strip()]
    if code in (1, 2) and not (args[0] == "prefetch" and code == 1):
        # A service that fails while running says so as "edgecache hub: ..." (k8s/service.py).
        prefixes = ("edgecache: error: ", f"edgecache {args[0]}: ")
        assert lines and lines[-1].startswith(prefixes), stderr[-3000:]
        assert not BUG.search(lines[-1]), lines[-1]
        if args[0] not in SERVICES:  # services log what they did before failing
            assert len(lines) == 1 or all(not line.startswith("  ") for line in lines), stderr
    assert {d: set(os.listdir(d)) for d in system} == system, "written outside the scratch"
