"""Draw the benchmark page's charts: bench.svg from ``bench --json``, bench-app.svg from a report.

bench.svg was made by these commands, on the 2-core development machine
(shared with other work, so figures vary between runs by 20 to 40%; the
ratios within one run are what to read):

    cd docs/charts
    python -m batchdispatch bench --only enqueue --json bench-enqueue.json > bench-enqueue.txt
    python -m batchdispatch bench --only http --json bench-http.json > bench-http.txt
    python make_charts.py

The .txt files are the reports of the same runs.

bench-app.svg is drawn from bench-app.txt: the two tables of the run of
``python -m batchdispatch bench --only app`` that the page's "Application
benchmark" quotes, copied from docs/benchmark.rst, where they were pasted
from that run's output (the rest of its report was not kept). The app
section writes no JSON, and a new run would change every figure the page,
the README and the changelog quote from it; drawn from the same table, the
chart and the page cannot disagree. To chart a new run, paste its tables
into the page and into bench-app.txt, and run ``python make_charts.py``.

matplotlib comes with the ``docs`` extra; the docs build itself only reads
the committed SVGs. Both are written with a fixed hash salt and no date, so
the same figures give the same files.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Tuple

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt

HERE = os.path.dirname(os.path.abspath(__file__))
#: Bar colours: the alternatives in grey, batchdispatch in blue.
OURS, OTHERS = "#2b6cb0", "#a0aec0"


def load(name: str) -> Dict[str, Any]:
    with open(os.path.join(HERE, name), encoding="utf-8") as file:
        return dict(json.load(file))


def draw(enqueue: Dict[str, Any], http: Dict[str, Any], target: str) -> None:
    plt.rcParams["svg.hashsalt"] = "batchdispatch"  # the same figures give the same file
    designs = enqueue["enqueue"]["designs"]
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(13, 4.2))
    labels = [d["label"].replace(" (the limit)", "").replace(" + get() per item", "") for d in designs]
    colours = [OURS if d["key"] == "d" else OTHERS for d in designs]

    values = [d["ns_per_enqueue"]["4"] for d in designs]
    bars = left.barh(labels, values, color=colours)
    left.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=3, fontsize=8)
    left.set_title("Cost of one enqueue, 4 producer threads\n(ns, lower is better)", fontsize=10)
    left.invert_yaxis()

    e2e = [d for d in designs if d["items_per_s"]]
    values = [d["items_per_s"]["4"] / 1e6 for d in e2e]
    bars = middle.barh([labels[designs.index(d)] for d in e2e], values,
                       color=[OURS if d["key"] == "d" else OTHERS for d in e2e])
    middle.bar_label(bars, labels=[f"{v:,.1f}M" for v in values], padding=3, fontsize=8)
    middle.set_title("End to end, 4 producer threads\n(million items/s, higher is better)", fontsize=10)
    middle.invert_yaxis()

    runs = http["http"]
    values = [run["items_per_s"] for run in runs]
    names = [run["label"].replace(", batches of 100", "\n(batches of 100)") for run in runs]
    bars = right.barh(names, values, color=[OTHERS, OTHERS, OURS])
    right.set_xscale("log")
    right.bar_label(bars, labels=[f"{v:,.0f}" for v in values], padding=3, fontsize=8)
    right.set_title("HTTP delivery to 127.0.0.1\n(items/s, log scale, higher is better)", fontsize=10)
    right.invert_yaxis()

    for axes in (left, middle, right):
        axes.tick_params(labelsize=8)
        axes.spines[["top", "right"]].set_visible(False)
        axes.margins(x=0.25)
    fig.suptitle(f"batchdispatch {enqueue['version']} bench, Python {enqueue['python']}, "
                 f"{enqueue['cpus']} CPUs; {enqueue['items']:,} items per run, best of {enqueue['repeat']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(target, metadata={"Date": None})
    plt.close(fig)


def app_table(name: str) -> List[Dict[str, str]]:
    """The rows of the app section's main table in *name* (the one with a cost spread), by column."""
    with open(os.path.join(HERE, name), encoding="utf-8") as file:
        lines = [line.strip() for line in file]
    for at, line in enumerate(lines):
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("|") and "cost spread" in cells:
            rows = []
            for row in lines[at + 2:]:  # after the header's rule
                if not row.startswith("|"):
                    break
                rows.append(dict(zip(cells, (cell.strip() for cell in row.strip("|").split("|")))))
            return rows
    raise ValueError(f"{name} has no table with a 'cost spread' column")


def spread(text: str) -> Tuple[float, float]:
    """``"-4.2 to 24.0"``: the lowest and highest of the rounds."""
    low, high = text.split(" to ")
    return float(low), float(high)


def draw_app(rows: List[Dict[str, str]], target: str) -> None:
    plt.rcParams["svg.hashsalt"] = "batchdispatch"  # the same figures give the same file
    shipping = [row for row in rows if row["cost"] != "-"]  # the bare app is the yardstick, not a bar
    # "HttpSink," on a line of its own, its settings below: the four differ only there.
    labels = [row["variant"].replace("HttpSink, ", "HttpSink,\n", 1) for row in shipping]
    colours = [OURS if row["variant"].startswith("HttpSink") else OTHERS for row in shipping]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2), sharey=True)

    costs = [float(row["cost"].rstrip("%")) for row in shipping]
    lows, highs = zip(*(spread(row["cost spread"]) for row in shipping))
    whiskers = [[cost - low for cost, low in zip(costs, lows)],
                [high - cost for cost, high in zip(costs, highs)]]
    left.barh(labels, costs, color=colours, xerr=whiskers, error_kw={"ecolor": "#4a5568", "capsize": 3})
    left.axvline(0, color="#4a5568", linewidth=0.8)
    for y, (cost, high) in enumerate(zip(costs, highs)):
        left.annotate(f"{cost:.1f}%", (high, y), xytext=(5, 0), textcoords="offset points",
                      va="center", fontsize=8)
    left.set_title("Cost to the app's requests per second\n(%, median of the rounds; whiskers: lowest "
                   "to highest round)", fontsize=10)

    extra = [float(row["vs bare"]) for row in shipping]
    bars = right.barh(labels, extra, color=colours)
    right.bar_label(bars, labels=[f"{v:+,.0f}" for v in extra], padding=3, fontsize=8)
    right.set_title("Workers' CPU per request over the bare app\n(µs, between the medians of the rounds)",
                    fontsize=10)

    for axes in (left, right):
        axes.tick_params(labelsize=8)
        axes.spines[["top", "right"]].set_visible(False)
        axes.margins(x=0.15)
    left.invert_yaxis()  # shared with the right one: the table's order, top to bottom
    bare = next(row for row in rows if row["cost"] == "-")
    fig.suptitle(f"bench --only app, one run on the 2-core development machine: a Flask app under gunicorn "
                 f"(bare: {bare['req/s']} req/s, {bare['CPU us/req']} µs of CPU per request), "
                 f"one event per request; lower is better", fontsize=9)
    fig.tight_layout()
    fig.savefig(target, metadata={"Date": None})
    plt.close(fig)


if __name__ == "__main__":
    draw(load("bench-enqueue.json"), load("bench-http.json"), os.path.join(HERE, "bench.svg"))
    print(f"wrote {os.path.join(HERE, 'bench.svg')}")
    draw_app(app_table("bench-app.txt"), os.path.join(HERE, "bench-app.svg"))
    print(f"wrote {os.path.join(HERE, 'bench-app.svg')}")
