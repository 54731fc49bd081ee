"""Draw docs/charts/bench.svg from the JSON that ``python -m batchdispatch bench --json`` writes.

The chart on the benchmark page was made by these commands, on the 2-core
development machine (shared with other work, so figures vary between runs
by 20 to 40%; the ratios within one run are what to read):

    cd docs/charts
    python -m batchdispatch bench --only enqueue --json bench-enqueue.json > bench-enqueue.txt
    python -m batchdispatch bench --only http --json bench-http.json > bench-http.txt
    python make_charts.py

The .txt files are the reports of the same runs. matplotlib comes with the
``docs`` extra; the docs build itself only reads the committed SVG.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict

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


if __name__ == "__main__":
    draw(load("bench-enqueue.json"), load("bench-http.json"), os.path.join(HERE, "bench.svg"))
    print(f"wrote {os.path.join(HERE, 'bench.svg')}")
