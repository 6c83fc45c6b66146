"""Plots a request-rate sweep of skv_bench_serve (its --json file) as one PNG: request and
output-token throughput against the offered rate (left), TTFT and TPOT p50/p99 against the
offered rate (right, log scale when the values span more than two decades).

usage: plot_serve.py SWEEP.json [--out SWEEP.png] [--title TEXT]
Points whose request_rate is "inf" (no pacing) are left out; at least one finite point is
needed. Exits 1 with a message when the file has none.
"""
import argparse
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load_points(path):
    """The sweep's points with a finite offered rate, sorted by it."""
    with open(path) as f:
        doc = json.load(f)
    pts = [p for p in doc.get("points", []) if isinstance(p.get("request_rate"), (int, float))]
    return doc, sorted(pts, key=lambda p: p["request_rate"])


def plot_throughput(ax, pts):
    rates = [p["request_rate"] for p in pts]
    ax.plot(rates, [p["request_throughput"] for p in pts], "o-", label="requests/s")
    ax.plot(rates, rates, ":", color="gray", label="offered")
    ax.set_xlabel("offered request rate (req/s)")
    ax.set_ylabel("completed requests/s")
    ax.grid(True, alpha=0.3)
    tok = ax.twinx()
    tok.plot(rates, [p["output_throughput"] for p in pts], "s--", color="tab:green",
             label="output tok/s")
    tok.set_ylabel("output tokens/s")
    lines = ax.get_lines() + tok.get_lines()
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper left", fontsize="small")
    ax.set_title("throughput")


def plot_latency(ax, pts):
    rates = [p["request_rate"] for p in pts]
    values = []
    for metric, color in (("ttft_ms", "tab:blue"), ("tpot_ms", "tab:orange")):
        for q, style in (("p50", "o-"), ("p99", "^--")):
            ys = [p[metric][q] for p in pts]
            values += [y for y in ys if y > 0]
            ax.plot(rates, ys, style, color=color, label=f"{metric[:4].upper()} {q}")
    if values and max(values) / min(values) > 100:
        ax.set_yscale("log")
    ax.set_xlabel("offered request rate (req/s)")
    ax.set_ylabel("ms")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title("latency")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json")
    ap.add_argument("--out", help="PNG path (default: the JSON path with .png)")
    ap.add_argument("--title")
    args = ap.parse_args()
    doc, pts = load_points(args.json)
    if not pts:
        sys.exit(f"plot_serve: {args.json} has no point with a finite request_rate")
    out = args.out or (args.json[:-5] if args.json.endswith(".json") else args.json) + ".png"
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    plot_throughput(left, pts)
    plot_latency(right, pts)
    p = doc.get("parameters", {})
    model = doc.get("model", {}).get("name", "?")
    inputs = (f"workload {p['workload']}" if p.get("workload") else
              f"in {p.get('input_len')} / out {p.get('output_len')} tokens")
    fig.suptitle(args.title or
                 f"skv_bench_serve {model}: {inputs}, {p.get('num_prompts')} requests per rate")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
