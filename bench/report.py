"""Write docs/benchmarks.md and its chart from the JSON files of one ``make bench`` run.

    python -m bench.report --results .bench \
        --markdown docs/benchmarks.md --chart docs/benchmarks.png

``--results`` holds, for each loop run (``asyncio``, ``uvloop``),
``suite-LOOP.json`` (``python -m bench --json``) and ``others-LOOP.json``
(``python -m bench.others --json``). The page states the machine, the
versions, how the figures were taken, a chart, the table of fluid against
hand-written asyncio and the other libraries on the rows where they do the
same job, what could not be compared and why, and the suite's full table with
its targets, for each loop.

matplotlib is imported only to draw the chart: it is in the ``bench`` extra,
not in fluid's dependencies.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._harness import number, ratio_text
from .others._figures import LIBRARIES, Library

LOOPS = ("asyncio", "uvloop")
COLORS = {
    "fluid": "#3f51b5",
    "aio-fluid": "#e08a00",
    "aiomisc": "#2e9e5b",
    "aiojobs": "#b0306b",
}
CHART_LABELS = {
    "queue": "1 queue: msg/s, 1 consumer",
    "threads": "2 threads: msg/s sent from 4 threads",
    "fanout": "3 fanout: msg/s, 10 handlers",
    "tree.build": "4 tree: build",
    "tree.start": "4 tree: start",
    "tree.stop": "4 tree: stop",
    "tree.memory": "4 tree: memory per worker",
    "stop.function": "5 stop: idle function worker",
    "stop.queue": "5 stop: idle queue consumer",
    "grace.cpu": "6 grace: CPU while waiting",
    "grace.wall": "6 grace: wall time",
    "executors.threads": "9 executors: thread calls/s",
    "executors.round_trip": "9 executors: process round trip",
    "executors.speed_up": "9 executors: 2-process speed-up",
    "schedule.runs": "10 schedule: runs/s, 10 ms",
    "schedule.idle_cpu": "10 schedule: idle CPU",
    "jobs.io": "11 jobs: 1 ms jobs/s, 16 at a time",
    "jobs.trivial": "11 jobs: trivial jobs/s, 16 at a time",
}
"""What the chart calls each compared row (the tables use the suite's own text)."""


# ------------------------------------------------------------------ reading


@dataclass(frozen=True)
class LoopRun:
    """Everything measured on one loop: the suite's JSON and the other libraries."""

    loop: str
    suite: dict[str, Any]
    libraries: list[Library]
    others_seconds: float | None

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The suite's rows, in the order it ran them."""
        rows: list[dict[str, Any]] = self.suite["rows"]
        return rows

    def row(self, key: str) -> dict[str, Any] | None:
        """The suite row with this key."""
        return next((row for row in self.rows if row["key"] == key), None)

    def figure(self, library: str, key: str) -> float | None:
        """``library``'s figure on the row ``key``, if it has one."""
        for lib in self.libraries:
            if lib.name == library:
                for figure in lib.figures:
                    if figure.key == key:
                        return figure.value
        return None

    def compared_keys(self) -> list[str]:
        """Keys of the suite rows that at least one other library has a figure for."""
        keys = {figure.key for lib in self.libraries for figure in lib.figures}
        return [row["key"] for row in self.rows if row["key"] in keys]


def read(results: Path) -> list[LoopRun]:
    """The runs found in ``results``, asyncio first; every figure checked against its row."""
    runs = []
    for loop in LOOPS:
        suite_path, others_path = results / f"suite-{loop}.json", results / f"others-{loop}.json"
        if not suite_path.exists():
            continue
        suite = json.loads(suite_path.read_text(encoding="utf-8"))
        libraries: list[Library] = []
        others_seconds = None
        if others_path.exists():
            others = json.loads(others_path.read_text(encoding="utf-8"))
            if others["quick"] != suite["quick"] or others["loop"] != loop:
                raise SystemExit(f"{others_path} was not run like {suite_path}")
            libraries = [Library.from_dict(lib) for lib in others["libraries"]]
            others_seconds = others["seconds"]
        run = LoopRun(loop, suite, libraries, others_seconds)
        check(run)
        runs.append(run)
    if not runs:
        raise SystemExit(f"no suite-LOOP.json in {results}: run make bench")
    return runs


def check(run: LoopRun) -> None:
    """Every figure names a suite row of the same unit."""
    for library in run.libraries:
        for figure in library.figures:
            row = run.row(figure.key)
            if row is None:
                raise SystemExit(f"{library.name}: no suite row {figure.key!r} on {run.loop}")
            if row["unit"] != figure.unit:
                raise SystemExit(
                    f"{library.name} {figure.key}: unit {figure.unit!r}, suite row {row['unit']!r}"
                )


def oriented(row: dict[str, Any], better: float | None, worse: float | None) -> float | None:
    """How many times ``better`` beats ``worse`` on this row (> 1: ``better`` is better)."""
    if better is None or worse is None or min(better, worse) <= 0:
        return None
    return better / worse if row["higher_is_better"] else worse / better


def times_text(ratio: float | None) -> str:
    """A ratio as the tables show it: ``0.52x``, ``3.10x``, ``27.9x``, ``85,573x``."""
    if ratio is not None and ratio >= 100:
        return f"{ratio:,.0f}x"
    if ratio is not None and ratio >= 10:
        return f"{ratio:.1f}x"
    return ratio_text(ratio)


def library_names(runs: Sequence[LoopRun]) -> list[str]:
    """The other libraries measured in any run, in the usual order."""
    present = {lib.name for run in runs for lib in run.libraries}
    return [name for name in LIBRARIES if name in present]


# ---------------------------------------------------------------- markdown


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def markdown_table(
    header: Sequence[str], lines: Sequence[Sequence[str]], right: range = range(0)
) -> str:
    """A markdown table; the columns in ``right`` (figures) are right-aligned."""
    rule = ["---:" if i in right else "---" for i in range(len(header))]
    return "\n".join(
        "| " + " | ".join(cell(c) for c in line) + " |" for line in [header, rule, *lines]
    )


def comparison_table(run: LoopRun, names: Sequence[str]) -> str:
    """fluid, hand-written asyncio and each library on the rows they share."""
    header = ["case", "measure", "unit", "asyncio", "fluid", "fluid vs asyncio", *names]
    lines = []
    for key in run.compared_keys():
        row = run.row(key)
        assert row is not None
        others = []
        for name in names:
            value = run.figure(name, key)
            if value is None:
                others.append("-")
            else:
                versus = times_text(oriented(row, row["fluid"], value))
                others.append(f"{number(value)} ({versus})")
        lines.append(
            [
                row["case"],
                row["measure"],
                row["unit"],
                number(row["asyncio"]),
                number(row["fluid"]),
                times_text(row["ratio"]),
                *others,
            ]
        )
    return markdown_table(header, lines, right=range(3, len(header)))


def suite_table(run: LoopRun) -> str:
    """The suite's own table: every row, with its target and result."""
    header = ["case", "measure", "unit", "fluid", "asyncio", "ratio", "target", "result"]
    lines = [
        [
            row["case"],
            row["measure"],
            row["unit"],
            number(row["fluid"]),
            number(row["asyncio"]),
            ratio_text(row["ratio"]),
            row["target"] or "-",
            row["status"],
        ]
        for row in run.rows
    ]
    return markdown_table(header, lines, right=range(3, 6))


def suite_summary(run: LoopRun) -> str:
    """The targets met and missed, as the suite prints them."""
    checked = [row for row in run.rows if row["target"] is not None]
    missed = [row for row in checked if row["status"] == "MISS"]
    text = f"{len(checked) - len(missed)} of {len(checked)} targets met"
    if missed:
        text += "; missed: " + ", ".join(f"{r['case']} {r['measure']}" for r in missed)
    return text + "."


def machine_table(runs: Sequence[LoopRun], names: Sequence[str], chart: bool) -> str:
    """The machine, the interpreter, the loops and every version."""
    first = runs[0].suite
    lines = [
        ["machine", f"{first['cpus']} CPUs, {first['cpu_model']} ({first['machine']})"],
        ["Python", f"{first['implementation']} {first['python']}"],
        *[[f"loop: {run.loop}", run.suite["loop_description"]] for run in runs],
        ["fluid", first["fluid"]],
    ]
    for name in names:
        versions = {
            (lib.version, lib.python) for run in runs for lib in run.libraries if lib.name == name
        }
        text = ", ".join(sorted(version for version, _ in versions))
        pythons = {python for _, python in versions}
        if pythons != {first["python"]}:
            text += f" (on Python {', '.join(sorted(pythons))})"
        if name == "aio-fluid":
            text += ", in its own virtualenv"
        lines.append([name, text])
    if chart:
        lines.append(["matplotlib (chart)", importlib.metadata.version("matplotlib")])
    mode = "quick (`--quick`: one run, small sizes)" if first["quick"] else "full"
    lines.append(["mode", f"{mode}, repeats scale {first['repeats']}/5"])
    lines.append(["time taken", "; ".join(duration(run) for run in runs)])
    return markdown_table(["what", "which"], lines)


def duration(run: LoopRun) -> str:
    """How long the suite and the other libraries took on this loop."""
    text = f"{run.loop}: suite {run.suite['seconds']:.0f} s"
    if run.others_seconds is not None:
        text += f", other libraries {run.others_seconds:.0f} s"
    return text


def how_measured(runs: Sequence[LoopRun]) -> str:
    """The paragraph on method."""
    return (
        "`make bench` runs, for each event loop in turn, the suite (`python -m bench`: "
        "fluid and a hand-written asyncio version of each case, interleaved in one process, "
        "the order rotating every repeat, `gc.collect()` before every run, a check that no "
        "task or thread is left over), then the other libraries (`python -m bench.others`) "
        "on the suite's rows where they do the same job, with the same sizes, repeats and "
        "statistic: the best run for throughputs and times, the median for latencies and "
        "CPU figures. aiomisc and aiojobs run in the same virtualenv as fluid (`.venv-bench`, "
        "the `bench` extra); aio-fluid, whose package is also named `fluid`, runs in its own "
        "(`.venv-aiofluid`), in a subprocess started with `python -I` outside the repository. "
        "So the other libraries are measured after fluid, not interleaved with it, and the "
        "machine may have changed in between. aio-fluid logs a warning for every worker "
        "that stops; its logs below CRITICAL are silenced while it is measured, as the suite "
        "silences fluid's expected warnings. The machine has "
        f"{runs[0].suite['cpus']} CPUs and other jobs were running on it: figures vary "
        "between runs by 10 to 30 % and small differences mean nothing; the CPU-bound "
        "speed-up rows, which need both CPUs free, vary most (2.0 is the most 2 processes "
        "can give over 1; a figure above it means the run on 1 process was disturbed). "
        "Every figure is of "
        "this one run. Each case is described in `bench/README.md` and in the docstrings "
        "of its module in `bench/`; the other libraries' sides are listed below the tables."
    )


def notes(runs: Sequence[LoopRun], names: Sequence[str]) -> list[str]:
    """What each library's side runs, and what it has no equivalent for."""
    lines: list[str] = []
    order = [row["key"] for row in runs[0].rows]
    for name in names:
        library = next((lib for r in runs for lib in r.libraries if lib.name == name), None)
        if library is None:
            continue
        lines += ["", f"**{name} {library.version}** runs:", ""]
        hows: dict[str, list[str]] = {}  # rows measured the same way share a line
        figures = sorted(library.figures, key=lambda f: order.index(f.key))
        for figure in figures:
            labels = hows.setdefault(figure.how, [])
            label = CHART_LABELS.get(figure.key, figure.key)
            if label not in labels:
                labels.append(label)
        lines += [f"* {'; '.join(labels)}: {how}." for how, labels in hows.items()]
        lines += ["", "and has no equivalent for:", ""]
        lines += [f"* {gap.case}: {gap.reason}" for gap in library.not_compared]
    return lines


def markdown(runs: Sequence[LoopRun], chart: str | None, when: str) -> str:
    """The whole page."""
    names = library_names(runs)
    out = [
        "# Benchmarks",
        "",
        "<!-- Generated by `make bench` (bench/report.py). Do not edit: run it again. -->",
        "",
        f"One run of `make bench`, {when}: fluid against hand-written asyncio, and "
        f"against {', '.join(names) or 'no other library'} where they do the same job, "
        f"on {' and '.join(run.loop for run in runs)}.",
        "",
        "## Machine and versions",
        "",
        machine_table(runs, names, chart is not None),
        "",
        "## How it was measured",
        "",
        how_measured(runs),
        "",
        "## fluid and the other libraries",
        "",
    ]
    if chart is not None:
        out += [
            f"![Each library's figure relative to hand-written asyncio, per row]({chart})",
            "",
            "Each bar is a library's figure relative to the hand-written asyncio version of "
            "the same row on the same loop, oriented so that above 1 is better than "
            "hand-written asyncio (more messages per second, less time, memory or CPU). "
            "The scale is logarithmic. Rows where a bar is missing have no equivalent in "
            "that library.",
            "",
        ]
    out += [
        "In brackets after another library's figure: fluid against that library, above 1 "
        "when fluid is better (for a throughput, fluid's figure divided by the library's; "
        "for a time, a memory or a CPU figure, the library's divided by fluid's).",
    ]
    for run in runs:
        out += ["", f"### On {run.loop}", "", comparison_table(run, names)]
    out += ["", "### What the other libraries run", *notes(runs, names)]
    out += [
        "",
        "## Every case: fluid against hand-written asyncio",
        "",
        "The suite's table (`python -m bench`), with the targets of each row. The ratio is "
        "above 1 when fluid is better; `info` rows have no target.",
    ]
    for run in runs:
        out += ["", f"### On {run.loop}", "", suite_table(run), "", suite_summary(run)]
    return "\n".join(out) + "\n"


# -------------------------------------------------------------------- chart


def write_chart(runs: Sequence[LoopRun], path: Path) -> None:
    """A bar chart per loop: each library's figure relative to hand-written asyncio."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    names = ["fluid", *library_names(runs)]
    keys = [key for key in CHART_LABELS if any(key in run.compared_keys() for run in runs)]
    # the bars of a row: fluid and the libraries with a figure for it (on any loop)
    bars = {
        key: [n for n in names if n == "fluid" or any(r.figure(n, key) for r in runs)]
        for key in keys
    }
    figure, axes = plt.subplots(
        1, len(runs), figsize=(6.5 * len(runs), 0.5 * len(keys) + 1.6), sharey=True
    )
    axes_list = list(axes) if len(runs) > 1 else [axes]
    extent: list[float] = []
    for ax, run in zip(axes_list, runs, strict=True):
        for position, key in enumerate(keys):
            row = run.row(key)
            if row is None:
                continue
            height = 0.8 / len(bars[key])
            for index, name in enumerate(bars[key]):
                value = row["fluid"] if name == "fluid" else run.figure(name, key)
                relative = oriented(row, value, row["asyncio"])
                if relative is None:
                    continue
                y = position + (index - (len(bars[key]) - 1) / 2) * height
                ax.barh(y, relative, height=height, color=COLORS.get(name, "grey"))
                extent.append(relative)
                ax.text(relative, y, f" {times_text(relative)}", va="center", fontsize=6)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_title(f"{run.loop} loop: relative to hand-written asyncio (> 1: better)")
        ax.grid(axis="x", which="major", linewidth=0.3)
        ax.set_yticks(range(len(keys)), [CHART_LABELS[key] for key in keys], fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
    for ax in axes_list:  # the same scale on every loop, with room for the labels
        ax.set_xlim(min(extent, default=1.0) / 3, max(extent, default=1.0) * 6)
    axes_list[0].set_ylim(len(keys) - 0.5, -0.5)  # first row at the top (the axes share y)
    handles = [Patch(color=COLORS.get(name, "grey")) for name in names]
    figure.legend(handles, names, loc="lower center", ncol=len(names), frameon=False)
    figure.tight_layout(rect=(0, 0.04, 1, 1))
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ------------------------------------------------------------------ command


def main(argv: Sequence[str] | None = None) -> int:
    """Read the results, write the page and (unless ``--no-chart``) the chart."""
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("--results", type=Path, default=Path(".bench"))
    parser.add_argument("--markdown", type=Path, default=Path("docs/benchmarks.md"))
    parser.add_argument("--chart", type=Path, default=Path("docs/benchmarks.png"))
    parser.add_argument("--no-chart", action="store_true", help="write the page only")
    args = parser.parse_args(argv)
    runs = read(args.results)
    chart: str | None = None
    if not args.no_chart:
        write_chart(runs, args.chart)
        chart = os.path.relpath(args.chart, args.markdown.parent)
        print(f"chart written to {args.chart}")
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    args.markdown.write_text(markdown(runs, chart, when), encoding="utf-8")
    print(f"page written to {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
