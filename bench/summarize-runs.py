#!/usr/bin/env python3
"""Medians of repeated `ringman-bench run --json` files of the fan-out scenarios.

Usage: bench/summarize-runs.py DIR, where DIR holds `<scenario>-r<rate>-<round>.json` files
written by `run --scenario fanout|fanout-redis --rate <rate> --json ...`. Prints one row per
(scenario, rate) with median [min..max] over the rounds and, per rate, the ratios of the
`fanout-redis` medians to the `fanout` ones.
"""
import glob
import json
import re
import statistics
import sys


def stat(values):
    return (statistics.median(values), min(values), max(values))


def fmt(t, prec=0, scale=1.0):
    return f"{t[0] / scale:,.{prec}f} [{t[1] / scale:,.{prec}f}..{t[2] / scale:,.{prec}f}]"


def main(d):
    rows = {}
    for f in sorted(glob.glob(f"{d}/*.json")):
        m = re.match(r".*/(fanout(?:-redis)?)-r(\d+)-(\d+)\.json$", f)
        if m:
            r = json.load(open(f))["results"][0]
            rows.setdefault((m[1], int(m[2])), []).append(r)
    print(f"{'scenario':<13} {'pub/s':>5} {'n':>2} {'deliveries/s':>28} {'p50 ms':>16} {'p99 ms':>16} "
          f"{'servers µs/del':>18} {'redis µs/del':>20} {'total µs/del':>18} {'other cores':>18} sent=received")
    med = {}
    for (sc, rate), rs in sorted(rows.items(), key=lambda x: (x[0][1], x[0][0])):
        g = lambda k: stat([x[k] for x in rs])
        redis = stat([x["upstream_cpu_us_per_msg"] or 0.0 for x in rs])
        total = stat([x["server_cpu_us_per_msg"] + (x["upstream_cpu_us_per_msg"] or 0.0) for x in rs])
        complete = all(x["sent"] == x["received"] for x in rs)
        print(f"{sc:<13} {rate:>5} {len(rs):>2} {fmt(g('msgs_per_s')):>28} {fmt(g('p50_us'), 0, 1e3):>16} "
              f"{fmt(g('p99_us'), 0, 1e3):>16} {fmt(g('server_cpu_us_per_msg'), 2):>18} "
              f"{fmt(redis, 3) if sc == 'fanout-redis' else '-':>20} {fmt(total, 2):>18} "
              f"{fmt(g('other_cores'), 2):>18} {'yes' if complete else 'NO'}")
        med[(sc, rate)] = (g("msgs_per_s")[0], g("p50_us")[0], g("p99_us")[0], total[0])
    for rate in sorted({r for _, r in med}):
        a, b = med.get(("fanout-redis", rate)), med.get(("fanout", rate))
        if a and b:
            print(f"{rate}/s to the subscribers: through Redis (2 processes) / in-process (1 process), medians: "
                  f"deliveries/s {a[0] / b[0]:.2f}x, p50 {a[1] / b[1]:.2f}x, p99 {a[2] / b[2]:.2f}x, "
                  f"CPU per delivery {a[3] / b[3]:.2f}x")


if __name__ == "__main__":
    main(sys.argv[1])
