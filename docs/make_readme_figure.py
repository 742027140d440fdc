"""Writes docs/demo.svg for the README from a finished demo (runs/demo/aggregate.csv).

Plain SVG on purpose: plotly's static export needs kaleido and a browser, which a fresh clone may
lack. The interactive version of every figure is in runs/demo/report.html.
"""
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
agg = pd.read_csv(sys.argv[1] if len(sys.argv) > 1 else ROOT / "runs/demo/aggregate.csv")
metrics = [("balanced_accuracy", "balanced accuracy", "#4C78A8"), ("balanced_robustness", "balanced robustness (PGD-20)", "#F58518"),
           ("taet_tail_robustness", "TAET's tail (rarer half), PGD-20", "#E45756"),
           ("weakest_k_robustness", "weakest 4 classes, PGD-20", "#72B7B2")]
protocols = ["balanced", "long_tailed"]
arms = list(dict.fromkeys(agg["arm"]))
W, H, left, top, bottom = 860, 360, 50, 40, 70
panel = (W - left - 20) / len(protocols)
bar = panel / (len(arms) * (len(metrics) + 1) + 1)
ymax = 1.0
out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       f'<rect width="{W}" height="{H}" fill="white"/>']
y0 = H - bottom
for t in (0, 0.2, 0.4, 0.6, 0.8, 1.0):
    y = y0 - t / ymax * (y0 - top)
    out.append(f'<line x1="{left}" x2="{W - 20}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>'
               f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{t:.1f}</text>')
for p_i, protocol in enumerate(protocols):
    x = left + p_i * panel + bar
    out.append(f'<text x="{left + p_i * panel + panel / 2:.1f}" y="{top - 14}" text-anchor="middle" '
               f'font-weight="bold">{protocol.replace("_", "-")} test set</text>')
    for arm in arms:
        x_start = x
        for key, _, color in metrics:
            v = agg[(agg.protocol == protocol) & (agg.arm == arm) & (agg.metric == key)]["mean"]
            v = float(v.iloc[0]) if len(v) else 0.0
            h = v / ymax * (y0 - top)
            out.append(f'<rect x="{x:.1f}" y="{y0 - h:.1f}" width="{bar * 0.9:.1f}" height="{h:.1f}" fill="{color}"/>'
                       f'<text x="{x + bar * 0.45:.1f}" y="{y0 - h - 3:.1f}" text-anchor="middle" font-size="9">{v:.2f}</text>')
            x += bar
        out.append(f'<text x="{(x_start + x) / 2:.1f}" y="{y0 + 14}" text-anchor="middle">{arm}</text>')
        x += bar
for i, (_, label, color) in enumerate(metrics):
    lx = left + i * 260
    out.append(f'<rect x="{lx}" y="{H - 30}" width="12" height="12" fill="{color}"/>'
               f'<text x="{lx + 16}" y="{H - 20}">{label}</text>')
out.append("</svg>")
(ROOT / "docs" / "demo.svg").write_text("\n".join(out) + "\n")
print(ROOT / "docs" / "demo.svg")
