"""``report.html`` of ``pneumokit evaluate``: one self-contained page (plots inlined, no scripts,
nothing fetched), so it opens from disk and can be mailed or archived with the decision."""

from __future__ import annotations

import base64
import html
from pathlib import Path

from ..core.files import write_bytes_atomic

_STYLE = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
          "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;"
          "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
          ".pass{color:#17692f;font-weight:bold}.fail{color:#b00020;font-weight:bold}img{max-width:30rem}")
_NAMES = {"auc": "AUC", "accuracy": "Accuracy", "sensitivity": "Sensitivity (recall)",
          "specificity": "Specificity", "ppv": "PPV (precision)", "npv": "NPV", "brier": "Brier score"}


def _num(v) -> str:
    return "—" if v is None or v != v else f"{v:.4f}"


def _figures_table(r: dict) -> str:
    est = r.get("model_estimate") or {}
    rows = []
    for key, name in _NAMES.items():
        value = r["figures"][key]
        ci = r["ci95"].get(key)
        ci_text = "—" if ci is None else f"{ci[0]:.4f} – {ci[1]:.4f}"
        rows.append(f"<tr><td>{name}</td><td>{_num(value)}</td><td>{ci_text}</td>"
                    f"<td>{_num(est.get(key))}</td></tr>")
    head = "<tr><th>figure</th><th>this site</th><th>95% CI</th><th>model's own estimate</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def _criteria(r: dict) -> str:
    if not r["criteria"]:
        return "<p>No acceptance criteria were given (<code>--require</code>).</p>"
    rows = "".join(
        f"<tr><td>{html.escape(c['requirement'])}</td><td>{html.escape(c['judged_on'])}</td>"
        f"<td>{_num(c['judged_value'])}</td><td class={'pass' if c['passed'] else 'fail'}>"
        f"{'PASS' if c['passed'] else 'FAIL'}</td></tr>" for c in r["criteria"])
    verdict = "ACCEPTED" if r["accepted"] else "NOT ACCEPTED"
    return (f"<p class={'pass' if r['accepted'] else 'fail'}>{verdict}</p><table><tr><th>criterion</th>"
            f"<th>judged on</th><th>value</th><th>verdict</th></tr>{rows}</table>")


def _image(path: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def _seen(r: dict) -> str:
    seen = r["images_seen_in_training"]
    return "" if seen is None else f"{seen} of these images were in the model's training data."


def write_html(r: dict, path: Path) -> Path:
    """The page for an ``evaluate`` report ``r`` (its plots must be written already)."""
    e = html.escape
    g = r["gate"]
    est = r.get("model_estimate")
    plots = "".join(_image(r["files"][k]) for k in ("roc.png", "confusion.png", "reliability.png")
                    if k in r["files"] and Path(r["files"][k]).is_file())
    body = f"""<h1>{e(r['ref'])} on {e(r['data'])} ({e(r['split'])})</h1>
<p>{r['images']} images of {r['patients']} patients scored with {e(r['engine'])} at threshold
{r['threshold']:.4f}. Input gate {e(g['state'])}: {g['flagged']} image(s) out of scope, left out.
{_seen(r)}</p>
<h2>Acceptance</h2>{_criteria(r)}
<h2>Figures</h2>{_figures_table(r)}
<p>95% confidence intervals: {e(r['ci_method']['method'])}, {r['ci_method']['replicates']} replicates
(seed {r['ci_method']['seed']}); coverage measured in <code>bench/site.py</code> (docs/site.md).
Model's own estimate: {e(est['source']) if est else 'not recorded'}.</p>
<h2>Calibration</h2><p>Brier score {_num(r['calibration']['brier'])}, expected calibration error
{_num(r['calibration']['ece'])} (10 bins).</p>
<h2>Plots</h2>{plots}"""
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(r['ref'])} acceptance"
            f"</title><style>{_STYLE}</style></head><body>{body}</body></html>\n")
    write_bytes_atomic(path, page.encode())
    return path
