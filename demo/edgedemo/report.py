"""The demo's numbers: one row per phase, printed as a table, saved as JSON and drawn as a PNG.

Hit ratio is the share of the bytes the reader got that did not cross the WAN during the phase
(``1 - WAN data bytes / bytes read``, floored at 0): it needs no cooperation from the reader and
cannot be flattered by a cache counting its own hits."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


@dataclass
class Phase:
    name: str
    title: str
    seconds: float = 0.0
    images: int = 0
    bytes_read: int = 0
    wan_data_bytes: int = 0
    wan_api_bytes: int = 0
    ok: bool = True
    missing: bool = False
    """Not run: the part of edgecache it needs is not in this build."""
    notes: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float | None:
        if not self.images or self.seconds <= 0:
            return None
        return self.images / self.seconds

    @property
    def hit_ratio(self) -> float | None:
        if not self.bytes_read:
            return None
        return max(0.0, 1.0 - self.wan_data_bytes / self.bytes_read)

    def fail(self, why: str) -> None:
        self.ok = False
        self.notes.append(why)

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["images_per_second"] = self.images_per_second
        data["hit_ratio"] = self.hit_ratio
        return data


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def table(phases: list[Phase]) -> str:
    header = ("phase", "time s", "images/s", "WAN MiB", "hit %", "result")
    rows = []
    for p in phases:
        if p.missing:
            result = "NOT RUN: " + "; ".join(p.notes)
        else:
            result = ("ok" if p.ok else "FAILED") + (": " + "; ".join(p.notes) if p.notes else "")
        hit = p.hit_ratio
        rows.append(
            (
                p.title,
                "-" if p.missing else f"{p.seconds:.1f}",
                _cell(p.images_per_second, ".1f"),
                "-" if p.missing else f"{p.wan_data_bytes / MiB:.2f}",
                _cell(None if hit is None else 100 * hit, ".0f"),
                result,
            )
        )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(5)]
    lines = []
    for r in [header, *rows]:
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(r[:5], widths, strict=True)) + "  " + r[5]
        )
        if r is header:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
    return "\n".join(lines)


def save_json(path: Path, phases: list[Phase], facts: dict[str, Any]) -> None:
    path.write_text(
        json.dumps({"facts": facts, "phases": [p.as_json() for p in phases]}, indent=2) + "\n"
    )


def save_chart(path: Path, phases: list[Phase], subtitle: str, dataset_bytes: int) -> None:
    import matplotlib

    matplotlib.use("Agg")  # a file, never a window
    import matplotlib.pyplot as plt

    ran = [p for p in phases if not p.missing]
    readers = [p for p in ran if p.images_per_second is not None]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    colours = ["#c0392b" if not p.ok else "#2e86c1" for p in readers]
    left.bar([p.title for p in readers], [p.images_per_second or 0 for p in readers], color=colours)
    rates = [p.images_per_second or 0 for p in readers]
    if rates and min(rates) > 0 and max(rates) / min(rates) > 20:
        left.set_yscale("log")  # local views read hundreds of times faster than the WAN
    left.set_ylabel("images per second (higher is better)")
    left.set_title("the ResNet pod's throughput")
    for i, p in enumerate(readers):
        left.annotate(
            f"{p.images_per_second:.0f}", (i, p.images_per_second or 0), ha="center", va="bottom"
        )
    right.bar([p.title for p in ran], [p.wan_data_bytes / MiB for p in ran], color="#7f8c8d")
    if dataset_bytes:
        right.axhline(dataset_bytes / MiB, color="#2e86c1", linestyle="--", linewidth=1)
        right.annotate(
            "the dataset, once",
            (len(ran) - 0.5, dataset_bytes / MiB),
            ha="right",
            va="bottom",
            color="#2e86c1",
        )
    right.set_ylabel("MiB over the WAN (lower is better)")
    right.set_title("WAN bytes per phase")
    for axis in (left, right):
        axis.tick_params(axis="x", labelrotation=25)
        for label in axis.get_xticklabels():
            label.set_horizontalalignment("right")
    fig.suptitle(f"edgecache edge demo: {subtitle}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
