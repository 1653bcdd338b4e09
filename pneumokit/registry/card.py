"""Model cards (Mitchell et al., "Model Cards for Model Reporting", FAT* 2019).

A card is a rendering of a version's ``metadata.json``, the one source of its
facts: ``facts(meta)`` gathers them (the card's JSON), ``markdown(facts)``
writes them out. The registry writes ``model_card.md`` and ``model_card.json``
into the version folder whenever the metadata changes (registration, export,
an ``evaluate`` run recorded against the version), so the card never lags
behind what the registry knows. They are derived files, not artifacts: no
sha256 is recorded for them, and ``pneumokit registry card REF`` renders them
anew from the metadata.
"""

from __future__ import annotations

from ..core.layout import CARD_FILE, CARD_JSON  # noqa: F401  (re-exported)

FIGURES = ("auc", "accuracy", "recall", "specificity", "precision", "brier", "ece")
SITE_FIGURES = ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "brier")

INTENDED_USE = (
    "Decision support that sorts frontal (PA/AP) chest radiographs into NORMAL and PNEUMONIA, "
    "for research and for a site that has measured it on its own patients first (`pneumokit "
    "evaluate --require`, see 'Site evaluations'). A second reader beside a radiologist, not a "
    "diagnosis: pneumokit has no regulatory clearance.")
OUT_OF_SCOPE = [
    "Inputs that are not frontal chest radiographs (CT, lateral views, photographs, documents, "
    "blank or noise frames): the input gate flags many of them as out of scope and they get no "
    "label, but it cannot catch every kind (docs/gate.md, 'What the gate cannot catch').",
    "Telling pneumonia apart from other findings (effusion, tuberculosis, tumours, COVID-19): the "
    "model knows only NORMAL and PNEUMONIA; an abnormal image of another kind gets one of the two.",
    "Patients unlike the training data (see below: ages, centres, scanners) without a site "
    "evaluation; triage without a human reader; any use at a threshold other than the one recorded "
    "without re-measuring sensitivity and specificity.",
]
LIMITATIONS = [
    "Cross-validation measures patients from the same centres as the training images. On the "
    "team's external patients the default model's AUC was 0.9665 against its cross-validation "
    "estimate of 0.9907 (docs/site.md); measure a site's own patients with `pneumokit evaluate` "
    "before use, and adapt with `pneumokit adapt` where it falls short.",
    "The Kermany et al. 2018 data (the bundled demo set and the project's benchmarks) are "
    "paediatric chest X-rays (ages 1-5) from one centre in Guangzhou; a model trained on them has "
    "seen no adults.",
    "Probabilities are calibrated on the images named under 'Calibration'; at another site they "
    "may be over- or under-confident (the 'calibration' figures of a site evaluation say by how much).",
]


_DAMAGED = (KeyError, TypeError, ValueError, AttributeError, IndexError)


def facts(meta: dict) -> dict:
    """The card's facts, from a version's metadata (missing facts are ``None``, never guessed; a
    part whose record is malformed says so, and the rest of the card stands)."""
    return {
        "model": _guarded(_model, meta),
        "intended_use": INTENDED_USE,
        "out_of_scope_use": OUT_OF_SCOPE,
        "training_data": _guarded(_training_data, meta),
        "evaluation": _guarded(_evaluation, meta),
        "calibration": meta.get("calibration"),
        "input_gate": _guarded(_gate, meta.get("gate")),
        "site_evaluations": meta.get("evaluations", []),
        "lineage": _guarded(_lineage, meta.get("lineage")),
        "export": _guarded(_export, meta),
        "limitations": LIMITATIONS,
        "reference": "Mitchell et al., Model Cards for Model Reporting, FAT* 2019",
    }


def _guarded(part, record):
    try:
        return part(record)
    except _DAMAGED as exc:
        return {"damaged": _why(exc)}


def _why(exc: BaseException) -> str:
    return f"not rendered: its record in metadata.json is incomplete or edited ({type(exc).__name__}: {exc})"


def _model(meta: dict) -> dict:
    config, arch = meta.get("config", {}), meta.get("architecture", {})
    recipe = meta.get("recipe") if isinstance(meta.get("recipe"), dict) else None
    return {
        "ref": f"{meta.get('name')}:{meta.get('version')}", "created_at": meta.get("created_at"),
        "made_by": meta.get("kind"), "architecture": arch.get("name"),
        "plugin": (f"{arch.get('plugin')} {arch.get('plugin_version')}" if arch.get("plugin")
                   else "plugin not recorded"),
        "recipe": None if recipe is None else {"name": recipe.get("name"),
                                               "overridden": recipe.get("overridden") or {}},
        "networks": config.get("members", 1), "seed": config.get("seed"),
        "fold_ensemble": (meta.get("ensemble") or {}).get("folds"),
        "input": f"{meta.get('image_size')}x{meta.get('image_size')}x{meta.get('channels')}",
        "preprocessing": meta.get("preprocessing"),
        "threshold": meta.get("threshold"), "threshold_rule": meta.get("threshold_rule"),
        "classes": meta.get("class_names"),
        "sha256": {k: v for k, v in meta.get("artifacts", {}).items() if k.startswith("model.")},
        "packages": meta.get("packages"),
    }


def _training_data(meta: dict) -> dict:
    data = dict(meta.get("dataset") or {})
    data["skipped"] = len(meta.get("skipped") or [])
    if meta.get("split"):
        data["split"] = meta["split"]
    return data


def _evaluation(meta: dict) -> dict | None:
    """Cross-validation (mean and spread over folds, out-of-fold), or a training run's validation."""
    metrics = meta.get("metrics") or {}
    if "cv" in metrics:
        folds = meta.get("folds") or {}
        oof = (metrics.get("out_of_fold") or {}).get("at_threshold") or {}
        return {"kind": "cross-validation", "folds": folds.get("k"), "grouping": folds.get("grouping"),
                "mean_std": {k: metrics["cv"][k] for k in FIGURES if k in metrics["cv"]},
                "out_of_fold": {k: oof[k] for k in FIGURES if k in oof}}
    if "validation" in metrics:
        split = meta.get("split") or {}
        return {"kind": "held-out validation split (threshold and temperature were chosen on it: "
                        "optimistic; `pneumokit cv` measures folds it never tuned on)",
                "images": split.get("validation_images"),
                "patients": split.get("validation_patients"),
                "figures": {k: metrics["validation"][k] for k in FIGURES if k in metrics["validation"]}}
    if "site_after" in metrics:
        after, site = metrics["site_after"], (meta.get("lineage") or {}).get("site") or {}
        figures = after.get("figures") or {}
        return {"kind": "cross-fitted on the adaptation site's patients (each scored by a model tuned "
                        "without them)", "images": site.get("images"), "patients": after.get("patients"),
                "figures": {k: figures[k] for k in SITE_FIGURES if k in figures}, "ci95": after.get("ci95")}
    return None


def _gate(gate: dict | None) -> dict | None:
    if not gate:
        return None
    held = gate.get("held_out") or {}
    return {"method": gate.get("method"), "rule": gate.get("rule"), "fit_images": gate.get("fit_images"),
            "held_out_flagged": held.get("flagged"), "held_out_images": held.get("images"),
            "components": {k: {"threshold": v.get("threshold"), "held_out_flagged": v.get("held_out_flagged")}
                           for k, v in (gate.get("components") or {}).items()}}


def _lineage(lineage: dict | None) -> dict | None:
    if not lineage:
        return None
    site = lineage.get("site") or {}
    return {"parent": lineage.get("parent"), "parent_model_sha256": lineage.get("parent_model_sha256"),
            "parent_dataset": lineage.get("parent_dataset"),
            "site_data": site.get("data"), "site_images": site.get("images"),
            "site_patients": site.get("patients"), "changed": lineage.get("changed")}


def _export(meta: dict) -> dict:
    return {"onnx": meta.get("onnx"), "int8": meta.get("onnx_int8"), "golden": meta.get("golden")}


def markdown(f: dict) -> str:
    """The card as Markdown, one section per part of Mitchell et al.'s template."""
    m = f["model"]
    out = [f"# Model card: {m.get('ref', 'a damaged record')}", "",
           f"Written by pneumokit from `metadata.json`; {f['reference']}.", ""]
    for title, lines in (("Model details", (_model_lines, m)),
                         ("Intended use", (lambda: [f["intended_use"]])),
                         ("Out-of-scope use", (lambda: [f"- {s}" for s in f["out_of_scope_use"]])),
                         ("Training data", (_data_lines, f["training_data"])),
                         ("Evaluation", (_evaluation_lines, f["evaluation"])),
                         ("Calibration", (_calibration_lines, f["calibration"])),
                         ("Input gate", (_gate_lines, f["input_gate"])),
                         ("Site evaluations", (_site_lines, f["site_evaluations"])),
                         ("Adaptation lineage", (_lineage_lines, f["lineage"])),
                         ("Export", (_export_lines, f["export"])),
                         ("Known limitations", (lambda: [f"- {s}" for s in f["limitations"]]))):
        out += [f"## {title}", "", *_rendered(lines), ""]
    return "\n".join(out).rstrip() + "\n"


def _rendered(section) -> list[str]:
    """A section's lines: ``(function, facts)`` or a function of nothing; a damaged part says so."""
    func, *args = section if isinstance(section, tuple) else (section,)
    if args and isinstance(args[0], dict) and "damaged" in args[0]:
        return [args[0]["damaged"][0].upper() + args[0]["damaged"][1:] + "."]
    try:
        return func(*args)
    except _DAMAGED as exc:
        return [_why(exc)[0].upper() + _why(exc)[1:] + "."]


def _model_lines(m: dict) -> list[str]:
    recipe = m["recipe"]
    changed = ", ".join(f"{k}={v}" for k, v in (recipe or {}).get("overridden", {}).items())
    nets = m["networks"] or 1
    lines = [f"- made by: `{_t(m['made_by'])}` on {_t(m['created_at'])}",
             f"- architecture: {_t(m['architecture'])} ({m['plugin']})"
             + (f", mean of {nets} networks' logits (seeds {m['seed']}..{m['seed'] + nets - 1})"
                if nets > 1 and isinstance(m["seed"], int) else "")
             + (f", mean of {m['fold_ensemble']} fold models" if m["fold_ensemble"] else ""),
             "- recipe: " + ("not recorded" if recipe is None else
                             f"{recipe['name']}" + (f", with {changed}" if changed else "")),
             f"- input: {m['input']} (preprocessing: {_short(m['preprocessing'])})",
             f"- classes: {', '.join(m['classes'] or [])}; threshold {_num(m['threshold'])}"
             + (f" ({m['threshold_rule']})" if m["threshold_rule"] else "")]
    lines += [f"- sha256 of {k}: `{v}`" for k, v in sorted(m["sha256"].items())]
    if m["packages"]:
        lines.append("- packages: " + ", ".join(f"{k} {v}" for k, v in sorted(m["packages"].items())))
    return lines


def _data_lines(d: dict) -> list[str]:
    classes = d.get("classes")
    lines = [f"- source: `{_t(d.get('root'))}`",
             f"- images: {_t(d.get('files'))}" + ("" if not classes else " (" + ", ".join(
                 f"{k} {v}" for k, v in classes.items()) + ")"),
             f"- patients: {d.get('patients', 'not recorded (registered before pneumokit counted them)')}",
             f"- fingerprint: sha256 `{_t(d.get('sha256'))}` of the images' content and labels",
             f"- unusable images left out: {d.get('skipped', 0)}"]
    split = d.get("split")
    if split:
        lines.append(f"- held out for validation: {split.get('validation_images')} images of "
                     f"{split.get('validation_patients')} patients (grouped by {split.get('grouping')})")
    return lines


def _evaluation_lines(e: dict | None) -> list[str]:
    if e is None:
        return ["Not recorded."]
    if e["kind"] == "cross-validation":
        lines = [f"{e['folds']}-fold cross-validation, grouped by {e['grouping']}; mean ± standard "
                 "deviation over folds, and out-of-fold at the stored threshold:", "",
                 "| figure | folds: mean ± std | out-of-fold |", "|---|---|---|"]
        for k, v in e["mean_std"].items():
            lines.append(f"| {k} | {_num(v['mean'])} ± {_num(v['std'])} | {_num(e['out_of_fold'].get(k))} |")
        return lines
    head = (f"{e['kind']}: {_t(e.get('images'))} images of {e.get('patients')} patients"
            if e.get("patients") is not None else e["kind"])
    ci = e.get("ci95") or {}
    return [head + ":", "", "| figure | value |", "|---|---|"] + [
        f"| {k} | {_num(v)}" + (f" ({_num(ci[k][0])}-{_num(ci[k][1])})" if ci.get(k) else "") + " |"
        for k, v in (e.get("figures") or {}).items()]


def _calibration_lines(c: dict | None) -> list[str]:
    if not c:
        return ["Not calibrated."]
    lines = [f"- method: {c.get('method')}, temperature {_num(c.get('temperature'))}"
             + (f" ({c['fitted_on']})" if c.get("fitted_on") else "")]
    if "brier_uncalibrated" in c:
        lines.append(f"- Brier {_num(c['brier_uncalibrated'])} -> {_num(c['brier'])}, ECE "
                     f"{_num(c.get('ece_uncalibrated'))} -> {_num(c.get('ece'))} (before -> after)")
    else:
        lines.append(f"- Brier {_num(c.get('brier'))}, ECE {_num(c.get('ece'))}")
    return lines


def _gate_lines(g: dict | None) -> list[str]:
    if not g:
        return ["No input gate: every input gets a label. Retrain to get one."]
    lines = [f"- method: {g['method']}", f"- rule: {g['rule']}",
             f"- fitted on {g['fit_images']} images; flags {g['held_out_flagged']} of "
             f"{g['held_out_images']} held-out real X-rays"]
    lines += [f"- {k}: threshold {_num(v['threshold'])}, flags {v['held_out_flagged']} held-out"
              for k, v in g["components"].items()]
    return lines


def _site_lines(runs: list[dict]) -> list[str]:
    if not runs:
        return ["None yet. `pneumokit evaluate REF --data SITE` measures a site's own patients and "
                "records the run here."]
    lines = ["| date | data | images (patients) | flagged | auc | accuracy | sensitivity | specificity "
             "| verdict |", "|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        cells = [_ci(r, k) for k in ("auc", "accuracy", "sensitivity", "specificity")]
        verdict = {True: "accepted", False: "not accepted", None: "-"}[r.get("accepted")]
        lines.append(f"| {r.get('date')} | `{r.get('data')}` ({r.get('split')}) | {r.get('images')} "
                     f"({r.get('patients')}) | {r.get('flagged')} | " + " | ".join(cells) + f" | {verdict} |")
    lines += ["", "Figures at the stored threshold, with 95% intervals (a bootstrap over patients)."]
    return lines


def _ci(run: dict, key: str) -> str:
    value, ci = (run.get("figures") or {}).get(key), (run.get("ci95") or {}).get(key)
    return _num(value) + (f" ({_num(ci[0])}-{_num(ci[1])})" if ci else "")


def _lineage_lines(lin: dict | None) -> list[str]:
    if not lin:
        return ["Not adapted: trained from scratch by pneumokit."]
    parent = lin.get("parent_dataset") or {}
    return [f"- adapted from `{lin['parent']}` (model.keras sha256 `{lin['parent_model_sha256']}`), "
            f"trained on {_t(parent.get('files'))} images (`{_t(parent.get('root'))}`, sha256 "
            f"`{_t(parent.get('sha256'))}`)",
            f"- on {lin['site_images']} images of {lin['site_patients']} patients (`{lin['site_data']}`)",
            f"- changed: {lin['changed']}"]


def _export_lines(e: dict) -> list[str]:
    lines = []
    if e["onnx"]:
        p = e["onnx"]["parity"]
        outputs = ", ".join(e["onnx"].get("outputs", []))
        lines.append(f"- ONNX: opset {e['onnx']['opset']}, outputs {outputs}; "
                     f"Keras vs onnxruntime max |diff| {p['max_abs_diff']:.2e} on {p['images']} images")
    if e["golden"]:
        g = e["golden"]
        lines.append(f"- golden self-test: {len(g['vectors'])} vectors in `{g['folder']}`; "
                     "`pneumokit registry verify --run` re-scores them")
    if e["int8"]:
        q, p = e["int8"], e["int8"]["parity"]
        lines.append(f"- INT8: `{q['file']}` ({q['format']}, {'/'.join(q['operators'])}); on "
                     f"{p['images']} held-out images (`{q['held_out']['source']}`): AUC "
                     f"{_num(p['auc']['float32'])} -> {_num(p['auc']['int8'])}, accuracy "
                     f"{_num(p['accuracy']['float32'])} -> {_num(p['accuracy']['int8'])}, max |dp| "
                     f"{_num(p['max_abs_probability_change'])}, {p['labels_changed']} labels changed")
    return lines or ["Not exported yet: `pneumokit export REF`."]


def _short(pre: dict | None) -> str:
    if not pre:
        return "not recorded"
    return (f"{pre.get('color')}, {pre.get('resize')} resize to {pre.get('height')}x{pre.get('width')}, "
            f"scale {pre.get('scale'):.6g}, mean {pre.get('mean')}, std {pre.get('std')}")


def _t(value) -> str:
    return "not recorded" if value is None else str(value)


def _num(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    return f"{value:.4f}" if isinstance(value, float) else str(value)
