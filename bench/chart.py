#!/usr/bin/env python3
"""Draw bench/compare.sh's ratios (forkserve ÷ nginx, ÷ each Python server) as a self-contained SVG (standard library only).

  chart.py --title TITLE --subtitle TEXT < rows.tsv > chart.svg

Each input line is tab-separated: SECTION, LABEL, METRIC, RATIO, TARGET_RATIO. Rows of one
SECTION are drawn under its heading, in input order; consecutive rows with the same LABEL form
one group (one bar per METRIC). RATIO is forkserve / the other server (or, in a section that says so, another quotient); TARGET_RATIO (or "-") puts a marker
where the target lies. Ratios are drawn as bars from 1x on a log2 scale, with a line at 1x.
"""
import argparse
import html
import math
import sys

WIDTH = 800
LABEL_RIGHT = 318  # labels end here
PLOT_LEFT, PLOT_RIGHT = 330, 670
VALUE_LEFT = 678
ROW, BAR = 17, 11
FONT = "font-family=\"-apple-system, 'Segoe UI', Helvetica, Arial, sans-serif\""
INK, MUTED, GRID, TARGET = "#1b1f24", "#57606a", "#d0d7de", "#cf222e"
COLORS = ["#0a5fa8", "#7fb2e5", "#8250df", "#c297ff", "#1a7f37", "#bf8700", "#cf6a22", "#6e7781", "#bf3989"]


def number(s):
    try:
        v = float(s)
    except ValueError:
        return None
    return v if v > 0 and math.isfinite(v) else None


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--title", required=True)
    p.add_argument("--subtitle", default="")
    a = p.parse_args()

    sections = []  # [(name, [(label, [(metric, ratio, target)])])]
    for line in sys.stdin:
        if not line.strip():
            continue
        section, label, metric, ratio, target = (line.rstrip("\n").split("\t") + ["-"] * 5)[:5]
        if not sections or sections[-1][0] != section:
            sections.append((section, []))
        groups = sections[-1][1]
        if not groups or groups[-1][0] != label:
            groups.append((label, []))
        groups[-1][1].append((metric, number(ratio), number(target)))

    values = [v for _, gs in sections for _, bars in gs for _, r, t in bars for v in (r, t) if v]
    lo = 2.0 ** math.floor(math.log2(min(values + [0.5])))
    hi = 2.0 ** math.ceil(math.log2(max(values + [2.0])))

    def x(v):
        v = min(max(v, lo), hi)
        return PLOT_LEFT + (math.log2(v) - math.log2(lo)) / (math.log2(hi) - math.log2(lo)) * (PLOT_RIGHT - PLOT_LEFT)

    metrics = []  # legend entries, in order of first use
    for _, gs in sections:
        for _, bars in gs:
            for m, _, _ in bars:
                if m not in metrics:
                    metrics.append(m)
    color = {m: COLORS[i % len(COLORS)] for i, m in enumerate(metrics)}

    out = []
    y = 30
    out.append(f'<text x="20" y="{y}" font-size="17" font-weight="600" fill="{INK}">{html.escape(a.title)}</text>')
    y += 20
    if a.subtitle:
        out.append(f'<text x="20" y="{y}" font-size="12" fill="{MUTED}">{html.escape(a.subtitle)}</text>')
        y += 18
    # legend
    lx = 20
    for m in metrics:
        if lx + 26 + 7 * len(m) > WIDTH - 80:  # wrap: the legend stays inside the picture
            lx = 20
            y += 16
        out.append(f'<rect x="{lx}" y="{y - 9}" width="12" height="10" fill="{color[m]}"/>')
        out.append(f'<text x="{lx + 16}" y="{y}" font-size="12" fill="{INK}">{html.escape(m)}</text>')
        lx += 26 + 7 * len(m)
    out.append(f'<path d="M{lx + 6} {y - 9} l5 5 l-5 5 l-5 -5 z" fill="{TARGET}"/>')
    out.append(f'<text x="{lx + 16}" y="{y}" font-size="12" fill="{INK}">target</text>')
    y += 14

    # Ticks at powers of 2 (always 1x), at least 40 px apart.
    e_lo, e_hi = round(math.log2(lo)), round(math.log2(hi))
    step = max(1, math.ceil(40 / ((PLOT_RIGHT - PLOT_LEFT) / (e_hi - e_lo))))
    ticks = [2.0 ** e for e in range(e_lo, e_hi + 1) if e % step == 0]

    for name, gs in sections:
        y += 24
        out.append(f'<text x="20" y="{y}" font-size="13" font-weight="600" fill="{INK}">{html.escape(name)}</text>')
        y += 8
        top = y
        rows = []
        for label, bars in gs:
            gy = y
            for metric, ratio, target in bars:
                cy = y + ROW / 2
                if ratio:
                    x0, x1 = sorted((x(1.0), x(ratio)))
                    rows.append(f'<rect x="{x0:.1f}" y="{cy - BAR / 2:.1f}" width="{max(x1 - x0, 1.5):.1f}" height="{BAR}" fill="{color[metric]}"><title>{html.escape(f"{label}, {metric}: {ratio:.3g}x")}</title></rect>')
                    text = f"{ratio:.2f}\u00d7" if ratio < 100 else f"{ratio:.0f}\u00d7"
                else:
                    text = "n/a"
                rows.append(f'<text x="{VALUE_LEFT}" y="{cy + 4:.1f}" font-size="12" fill="{INK}">{text}'
                            + (f' <tspan fill="{MUTED}">{html.escape(metric)}</tspan>' if len(bars) > 1 else "")
                            + "</text>")
                if target:
                    tx = x(target)
                    rows.append(f'<path d="M{tx:.1f} {cy - 7:.1f} l5 7 l-5 7 l-5 -7 z" fill="{TARGET}" stroke="#ffffff" stroke-width="1"><title>target {target:.3g}x</title></path>')
                y += ROW
            mid = (gy + y) / 2
            rows.append(f'<text x="{LABEL_RIGHT}" y="{mid + 4:.1f}" font-size="12" text-anchor="end" fill="{INK}">{html.escape(label)}</text>')
            y += 5
        bottom = y
        for t in ticks:
            tx = x(t)
            out.append(f'<line x1="{tx:.1f}" y1="{top}" x2="{tx:.1f}" y2="{bottom}" stroke="{GRID}" stroke-width="1"/>')
            lab = f"{t:g}\u00d7" if t >= 1 else f"1/{1 / t:g}\u00d7"
            out.append(f'<text x="{tx:.1f}" y="{bottom + 13}" font-size="11" text-anchor="middle" fill="{MUTED}">{lab}</text>')
        out.extend(rows)
        one = x(1.0)
        out.append(f'<line x1="{one:.1f}" y1="{top - 3}" x2="{one:.1f}" y2="{bottom}" stroke="{INK}" stroke-width="1.5"/>')
        y = bottom + 16

    height = y + 12
    print(f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" {FONT}>')
    print(f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>')
    print("\n".join(out))
    print("</svg>")


if __name__ == "__main__":
    main()
