"""The ``pneumokit`` command line: thin click shells over the Python API."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path

import click

from . import __version__
from .core import config as C
from .core.layout import CARD_FILE, METADATA_FILE
from .core.plugins import loaded
from .errors import PneumokitError


def _echo_json(data) -> None:
    from .core.files import json_safe

    click.echo(json.dumps(json_safe(data), indent=2, default=str, allow_nan=False))


def _table(rows: list[dict], columns: list[str]) -> str:
    widths = {c: max([len(c)] + [len(str(r.get(c, ""))) for r in rows]) for c in columns}
    lines = ["  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip()]
    for r in rows:
        lines.append("  ".join(str(r.get(c, "")).ljust(widths[c]) for c in columns).rstrip())
    return "\n".join(lines)


def _warn_plugin_errors() -> None:
    failed = [p.name for p in loaded().plugins if p.error]
    if failed:
        click.echo(
            f"warning: plugin(s) with errors: {', '.join(failed)} (see `pneumokit plugins`)",
            err=True,
        )


class _Main(click.Group):
    """The ``pneumokit`` group: a ``PneumokitError`` (a problem the user can fix) or an OS error
    naming a file is one line and exit 1; anything else is a bug and keeps its traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except PneumokitError as exc:
            raise click.ClickException(str(exc)) from exc
        except BrokenPipeError:  # the reader went away (`pneumokit registry list | head`)
            sys.stderr.close()
            raise click.exceptions.Exit(141) from None
        except OSError as exc:
            if exc.filename is None:
                raise _bug(exc) from exc
            raise click.ClickException(f"{exc.filename}: {exc.strerror or exc}") from exc
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            raise _bug(exc) from exc


def _bug(exc: Exception) -> click.exceptions.Exit:
    traceback.print_exc()
    click.echo(f"Error: this is a bug in pneumokit {__version__} ({type(exc).__name__} above), not "
               "something you did; please report it with the traceback.", err=True)
    return click.exceptions.Exit(1)


def _parse_options(pairs: tuple[str, ...]) -> dict:
    from .training.pipeline import _number

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE, e.g. weights=none",
                                     param_hint="--option")
        low = value.lower()
        options[key] = True if low == "true" else False if low == "false" else _number(value)
    return options


registry_option = click.option(
    "--registry", "registry_root", type=click.Path(file_okay=False),
    help="Registry folder (default: $PNEUMOKIT_REGISTRY, else ./registry).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
_MANIFEST_OPTIONS = [
    click.option("--path-column", default="path", show_default=True, help="Manifest: the image file column."),
    click.option("--label-column", default="label", show_default=True, help="Manifest: the label column."),
    click.option("--patient-column", default="patient", show_default=True,
                 help="Manifest: the patient column (optional in the file)."),
    click.option("--split-column", default="split", show_default=True,
                 help="Manifest: the split column (optional in the file; without it the rows are one set)."),
    click.option("--positive", multiple=True,
                 help="Manifest: a label value meaning PNEUMONIA (repeatable; default PNEUMONIA and 1)."),
    click.option("--negative", multiple=True,
                 help="Manifest: a label value meaning NORMAL (repeatable; default NORMAL and 0)."),
    click.option("--drop-unmapped", is_flag=True,
                 help="Manifest: leave out rows whose label is neither (e.g. CheXpert's -1 or blank), "
                      "counted, instead of reporting them as bad rows."),
]
_MANIFEST_KEYS = ("path_column", "label_column", "patient_column", "split_column", "positive", "negative",
                  "drop_unmapped")


def _data_source(data, opts: dict):
    """``--data`` as the library takes it: a folder, None (the demo set), or a ``Manifest``."""
    from .data.manifest import NEGATIVE, POSITIVE, Manifest, is_manifest

    given = {k: v for k, v in opts.items() if v not in (None, (), False)
             and not (k.endswith("_column") and v == k.removesuffix("_column"))}
    if data is None or not is_manifest(data):
        if given:
            raise click.UsageError(f"--{next(iter(given)).replace('_', '-')} is for a manifest (a CSV file "
                                   "given as --data); the data here is a folder")
        return data
    return Manifest(data, **{**opts, "positive": opts["positive"] or POSITIVE,
                             "negative": opts["negative"] or NEGATIVE})


def manifest_options(command):
    """The manifest options (docs/data.md): consumed here, so the command gets ``data_dir`` as a
    folder, None or a ``Manifest``."""
    import functools

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        opts = {k: kwargs.pop(k) for k in _MANIFEST_KEYS}
        try:
            kwargs["data_dir"] = _data_source(kwargs["data_dir"], opts)
        except PneumokitError as exc:
            raise click.ClickException(str(exc)) from exc
        return command(*args, **kwargs)
    for option in reversed(_MANIFEST_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def data_option(command):
    """``--data``: a dataset folder or a CSV manifest, with the manifest's options."""
    command = manifest_options(command)
    return click.option("--data", "data_dir", type=click.Path(exists=True),
                        help="Dataset folder or CSV manifest (docs/data.md; default: the bundled "
                             "demo set).")(command)
gate_option = click.option(
    "--gate", type=click.Choice(["on", "off"]), default="on", show_default=True,
    help="The input gate (docs/gate.md): on, an image that is not a frontal chest X-ray gets no "
         "label; off labels everything (research use; recorded in the output).")


def _result_rows(rows: list[dict], extra: tuple[str, ...] = ()) -> str:
    """The table of predict/explain rows: the label, OUT_OF_SCOPE or ERROR, then why."""
    shown = [{**r, "probability": "" if r["probability"] is None else f"{r['probability']:.4f}",
              "label": r["label"] or ("OUT_OF_SCOPE" if r.get("in_scope") is False else "ERROR"),
              "reason": r.get("reason") or r["error"] or r.get("notes") or "",
              **{c: r.get(c) or "" for c in extra}} for r in rows]
    columns = ["path", "probability", "label", *extra]
    return _table(shown, columns + (["reason"] if any(r["reason"] for r in shown) else []))


def _gate_fitted(meta: dict) -> None:
    """One line on the input gate a training run fitted (docs/gate.md)."""
    g = meta.get("gate")
    if g:
        held = g["held_out"]
        fitted = (f"{g['fit_images'] // 2} training images and an augmented copy of each"
                  if g.get("augmented_copy") else f"{g['fit_images']} training images")
        click.echo(f"input gate: fitted on {fitted}; flags {held['flagged']} of {held['images']} held-out "
                   "images (docs/gate.md)")


def _gate_notice(state: str, rows: list[dict]) -> None:
    """One line on stderr: the gate was off, absent, or how many images it refused."""
    if state == "off":
        click.echo("note: --gate off: every image was labelled, including any that is not a chest X-ray",
                   err=True)
    elif state == "absent":
        click.echo("warning: this model has no input gate (registered or exported before pneumokit had "
                   "one): images that are not chest X-rays still get a label; train and export it again",
                   err=True)
    refused = sum(1 for r in rows if r.get("in_scope") is False)
    if refused:
        click.echo(f"{refused} of {len(rows)} image(s) out of scope: no label given (docs/gate.md)", err=True)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pneumokit")
def main() -> None:
    """Train, cross-validate, version, export and serve chest X-ray pneumonia classifiers."""
    # TensorFlow's Python logger warns about tf.function retracing whenever a
    # fold's model predicts a batch of a new size; harmless, and noise here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    from .data.dicom import quiet_pydicom

    quiet_pydicom()  # what matters in pydicom's warnings is in each row (notes or error)


@main.command("list-models")
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def list_models(pattern: str | None, as_json: bool) -> None:
    """List architectures, optionally filtered by a wildcard PATTERN such as '*net*'."""
    records = [a.to_dict() for a in loaded().catalog.list_architectures(pattern)]
    _warn_plugin_errors()
    if as_json:
        _echo_json(records)
    elif records:
        click.echo(
            _table(records, ["name", "image_size", "channels", "plugin", "description"])
        )
    else:
        click.echo(f"no architecture matches {pattern!r}", err=True)


@main.command("list-augmentations")
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def list_augmentations(pattern: str | None, as_json: bool) -> None:
    """List augmentations, optionally filtered by a wildcard PATTERN."""
    records = [a.to_dict() for a in loaded().catalog.list_augmentations(pattern)]
    _warn_plugin_errors()
    if as_json:
        _echo_json(records)
    elif records:
        for r in records:
            r["params"] = ", ".join(f"{k}={v}" for k, v in r["params"].items())
        click.echo(_table(records, ["name", "params", "plugin", "description"]))
    else:
        click.echo(f"no augmentation matches {pattern!r}", err=True)


@main.command("list-recipes")
@click.argument("pattern", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def list_recipes(pattern: str | None, as_json: bool) -> None:
    """List training recipes (train/cv --recipe NAME), with their measured cost and figures."""
    catalog = loaded().catalog
    records = [r.to_dict() for r in catalog.list_recipes(pattern)]
    _warn_plugin_errors()
    if as_json:
        _echo_json(records)
    elif records:
        click.echo(_table([_recipe_row(r, catalog) for r in records],
                          ["name", "model", "epochs", "train_min", "figures", "plugin", "description"]))
    else:
        click.echo(f"no recipe matches {pattern!r}", err=True)


def _recipe_row(r: dict, catalog) -> dict:
    """A recipe's table row: the model and size it trains, and its first two figures."""
    s, minutes = r["settings"], r["train_minutes"]
    arch = s.get("architecture", C.DEFAULT_ARCHITECTURE)
    size = s.get("image_size") or (catalog.architectures[arch].image_size if arch in catalog.architectures
                                   else "?")
    members = s.get("members", 1)
    model = f"{members} x {arch}" if members > 1 else arch
    return {"name": r["name"], "model": f"{model} @ {size} px", "epochs": s.get("epochs", C.DEFAULT_EPOCHS),
            "train_min": "not measured" if minutes is None else f"{minutes:g}", "plugin": r["plugin"],
            "figures": ", ".join(f"{k} {v:g}" for k, v in list(r["figures"].items())[:2]) or "-",
            "description": r["description"]}


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def plugins_command(as_json: bool) -> None:
    """List plugin distributions, their hooks, what they registered, and errors."""
    records = [p.to_dict() for p in loaded().plugins]
    if as_json:
        _echo_json(records)
        return
    for r in records:
        click.echo(" ".join(filter(None, [r["name"], r["version"], "(built-in)" if r["builtin"] else ""])))
        click.echo(f"  hooks: {', '.join(r['hooks']) or '-'}")
        click.echo(f"  architectures: {', '.join(r['architectures']) or '-'}")
        click.echo(f"  augmentations: {', '.join(r['augmentations']) or '-'}")
        if r["recipes"]:
            click.echo(f"  recipes: {', '.join(r['recipes'])}")
        if r["error"]:
            click.echo(f"  error: {r['error']}")


@main.group("plugin")
def plugin_group() -> None:
    """Write plugins (see also `pneumokit plugins`, which lists the installed ones)."""


@plugin_group.command("new")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(file_okay=False), default=".", show_default=True,
              help="Folder to write pneumokit-NAME/ in.")
def plugin_new(name, directory):
    """Write a ready plugin distribution pneumokit-NAME/: an architecture, an augmentation, tests
    that run pneumokit's contract checks (pneumokit.testing), a README."""
    import shlex

    from .models.scaffold import names, new_plugin

    target = new_plugin(name, directory)
    click.echo(f"wrote {target}/ (distribution {names(name)['dist']}); next:\n"
               f"  pip install -e {shlex.quote(f'{target}[test]')}\n  pytest {shlex.quote(str(target))}")


@main.group("data")
def data_group() -> None:
    """Inspect datasets."""


@data_group.command("check")
@click.argument("data_dir", required=False, type=click.Path(exists=True))
@manifest_options
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def data_check(data_dir: str | None, as_json: bool) -> None:
    """Check a dataset folder or CSV manifest (default: the bundled demo set); exit 1 if anything
    is unusable (a manifest's bad rows are named by line)."""
    from .data.dataset import DatasetError, check_report, scan

    try:
        report = check_report(scan(data_dir))
    except DatasetError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        _echo_json(report)
    else:
        click.echo(_format_check(report))
    if not report["usable"]:
        sys.exit(1)


def _format_check(r: dict) -> str:
    lines = [f"dataset: {r['root']}", f"images: {r['images']}"]
    for split, counts in r["counts"].items():
        lines.append(f"  {split:<6}" + "".join(f"  {c} {n:>5}" for c, n in counts.items()))
    lines.append("patients: " + ", ".join(f"{c} {n}" for c, n in r["patients"].items())
                 + f" (images per patient: max {r['images_per_patient']['max']}, "
                 f"mean {r['images_per_patient']['mean']})")
    if r["unparsed_patient_ids"]:
        lines.append(f"images without a patient id (each its own group): {r['unparsed_patient_ids']}")
    if r["rows_left_out_unmapped"]:
        lines.append("manifest rows left out (label not mapped, --drop-unmapped): "
                     f"{r['rows_left_out_unmapped']}")
    d = r["duplicates"]
    lines.append(f"byte-identical duplicates: {d['groups']} group(s), {d['files']} files"
                 f" ({d['groups_across_patients']} span several patients)")
    lines.append("modes: " + ", ".join(f"{m} {n}" for m, n in r["modes"].items()))
    w, h = r["sizes"]["width"], r["sizes"]["height"]
    if w:
        lines.append(f"sizes: width {w['min']}..{w['max']} (median {w['median']:g}), "
                     f"height {h['min']}..{h['max']} (median {h['median']:g})")
    for folder in r["ignored_folders"]:
        lines.append(f"ignored folder (not train/val/test): {folder}")
    if r["problems"]:
        lines.append(f"problems: {len(r['problems'])}")
        lines += [f"  {p['path']}: {p['reason']}" for p in r["problems"]]
        if any(p["fatal"] for p in r["problems"]):
            lines.append("not usable: fix the " + ("manifest" if r["manifest"] else
                                                   "layout (DIR/train/{NORMAL,PNEUMONIA}/*.jpeg)")
                         + "; --skip-bad cannot help with that")
        else:
            lines.append("not usable: fix these, or train with --skip-bad to leave bad files out")
    else:
        lines.append("problems: none — usable")
    return "\n".join(lines)


_FIT_OPTIONS = [
    data_option,
    click.option("--recipe", default=None,
                 help=f"A named set of the settings below (`pneumokit list-recipes`; default "
                      f"{C.DEFAULT_RECIPE}); options given as well override its fields."),
    click.option("--model", "architecture", default=None,
                 help=f"Architecture name (default: {C.DEFAULT_ARCHITECTURE})."),
    click.option("--epochs", type=click.IntRange(1), default=None,
                 help=f"Maximum epochs (per fold in cv; default {C.DEFAULT_EPOCHS})."),
    click.option("--batch-size", type=click.IntRange(1), default=None,
                 help=f"Batch size (default {C.DEFAULT_BATCH_SIZE})."),
    click.option("--members", type=click.IntRange(1, C.MAX_MEMBERS), default=None,
                 help="Networks to train from seeds SEED, SEED+1, ... and average (a deep ensemble; "
                      "each takes a full training's time; default 1)."),
    click.option("--image-size", type=click.IntRange(8), default=None,
                 help="Square input size (default: the architecture's)."),
    click.option("--augment", default=None,
                 help="Augmentations, e.g. 'crop,rotate:degrees=10' ('' for none; default "
                      f"{C.DEFAULT_AUGMENT})."),
    click.option("--option", "-o", "options", multiple=True,
                 help="Architecture option KEY=VALUE, e.g. -o weights=none (repeatable)."),
    click.option("--learning-rate", type=float, default=None,
                 help=f"Adam (peak) learning rate (default {C.DEFAULT_LEARNING_RATE:g})."),
    click.option("--lr-schedule", type=click.Choice(C.LR_SCHEDULES), default=None,
                 help=f"cosine: {C.WARMUP_EPOCHS} warm-up epoch(s), then cosine decay to 0 at the last "
                      f"epoch; constant: a fixed rate (default {C.DEFAULT_LR_SCHEDULE})."),
    click.option("--bn-refresh/--no-bn-refresh", default=None,
                 help="Re-estimate batch-norm statistics on the training images after fitting "
                      f"(default {'on' if C.DEFAULT_BN_REFRESH else 'off'})."),
    click.option("--threshold-rule", type=click.Choice(C.THRESHOLD_RULES), default=None,
                 help="How the stored threshold is chosen on calibrated held-out probabilities: "
                      "calibrated = 0.5, youden = Youden's J (default "
                      f"{C.DEFAULT_THRESHOLD_RULE})."),
    click.option("--target-sensitivity", type=click.FloatRange(0, 1, min_open=True), default=None,
                 help="Instead, the highest threshold reaching this held-out sensitivity."),
    click.option("--val-fraction", type=float, default=None,
                 help="Patient-grouped validation fraction for early stopping "
                      f"(default {C.DEFAULT_VAL_FRACTION})."),
    click.option("--seed", type=int, default=None, help=f"Random seed (default {C.DEFAULT_SEED})."),
    click.option("--name", default=None, help="Registered model name (default: the architecture's name)."),
    registry_option,
    click.option("--skip-bad", is_flag=True, help="Leave out unusable images (each is listed)."),
    click.option("--jpeg-draft", is_flag=True,
                 help="Decode large JPEGs at a reduced DCT scale (faster; recorded in the model's "
                      "contract, but few runtimes outside Pillow/libjpeg can follow it)."),
]


def fit_options(command):
    """The options ``train`` and ``cv`` share, in one place."""
    for option in reversed(_FIT_OPTIONS):
        command = option(command)
    return command


def _config(cls, given: dict, options: tuple[str, ...], skip_bad: bool, recipe: str | None):
    """A ``TrainConfig``/``CVConfig`` from the recipe (``fast`` by default) and, over its fields,
    the options given."""
    from .models.recipes import recipe_config

    chosen = {k: v for k, v in given.items() if v is not None}
    if options:
        chosen["options"] = _parse_options(options)
    return recipe_config(recipe or C.DEFAULT_RECIPE, cls, **chosen, skip_bad=skip_bad)


@main.command("train")
@fit_options
@click.option("--quiet", is_flag=True, help="No progress bars.")
@json_option
def train_command(data_dir, recipe, architecture, epochs, batch_size, members, image_size, augment, options,
                  learning_rate, lr_schedule, bn_refresh, threshold_rule, target_sensitivity,
                  val_fraction, seed, name, registry_root, skip_bad, jpeg_draft, quiet, as_json):
    """Train one model on the train (+ val) split and register it as a new version."""
    from .core.config import TrainConfig
    from .core.progress import progress_enabled
    from .registry.store import Registry
    from .training.train import train

    given = {"architecture": architecture, "epochs": epochs, "batch_size": batch_size, "members": members,
             "image_size": image_size, "augment": augment, "learning_rate": learning_rate,
             "lr_schedule": lr_schedule, "bn_refresh": bn_refresh, "threshold_rule": threshold_rule,
             "target_sensitivity": target_sensitivity, "val_fraction": val_fraction, "seed": seed,
             "jpeg_draft": jpeg_draft or None}
    config = _config(TrainConfig, given, options, skip_bad, recipe)
    result = train(config, data_dir, registry=Registry(registry_root), name=name,
                   progress=progress_enabled(quiet or as_json),
                   echo=(lambda line: None) if quiet or as_json else
                   (lambda line: click.echo(line, err=True)))
    if as_json:
        _echo_json(result.to_dict())
        return
    for p in result.skipped:
        click.echo(f"skipped {p.path}: {p.reason}")
    m = result.metrics["validation"]
    click.echo(f"registered {result.version.ref} at {result.version.path}")
    n_val = result.version.metadata["split"]["validation_images"]
    click.echo(f"best epoch {result.best_epoch}; temperature {result.calibration['temperature']:.3f}; "
               f"validation ({n_val} images) at threshold {result.threshold:.3f} "
               f"({result.threshold_rule}; calibrated on these images):")
    click.echo("  " + "  ".join(f"{k} {m[k]:.4f}" for k in
                                ("auc", "accuracy", "recall", "specificity", "precision", "f1",
                                 "brier", "ece")))
    _gate_fitted(result.version.metadata)


@main.command("cv")
@fit_options
@click.option("--folds", type=click.IntRange(2), default=None,
              help=f"Number of folds (default {C.DEFAULT_FOLDS}).")
@click.option("--grouping", type=click.Choice(C.GROUPINGS), default=None,
              help="Fold by patient (default) or by image (lets patients leak: inflated scores).")
@click.option("--ensemble", is_flag=True, default=None,
              help="Register the mean of the fold models (calibrated) instead of a final fit.")
@click.option("--precision", type=click.Choice(C.PRECISIONS), default=None,
              help="auto: mixed_float16 on GPUs with compute capability >= 7.0, else float32.")
@click.option("--xla", type=click.Choice(C.XLA_MODES), default=None,
              help="auto: on with a GPU, off on CPU (where it is ~10x slower).")
@click.option("--output", type=click.Path(file_okay=False),
              help="Run folder (default runs/cv/NAME-YYYYmmdd-HHMMSS).")
@click.option("--resume", type=click.Path(exists=True, file_okay=False),
              help="Continue an interrupted run from its folder.")
@click.option("--no-final", is_flag=True, help="Skip the final model on all the data.")
@click.option("--plan", is_flag=True,
              help="Only write the run folder, for folds run as separate jobs: then --resume DIR "
                   "--only-fold K for each fold (any number at once), and --resume DIR to finish.")
@click.option("--only-fold", metavar="K|env",
              help="With --resume: train fold K only (1-based); 'env' takes K from "
                   "$SLURM_ARRAY_TASK_ID, or $JOB_COMPLETION_INDEX + 1 (Kubernetes counts from 0).")
@click.option("--quiet", is_flag=True, help="No progress bars and no notices.")
@json_option
def cv_command(data_dir, recipe, architecture, folds, epochs, batch_size, members, image_size, augment,
               options, grouping, ensemble, learning_rate, lr_schedule, bn_refresh, threshold_rule,
               target_sensitivity, val_fraction, precision, xla, seed, output, resume, name, registry_root,
               no_final, plan, only_fold, skip_bad, jpeg_draft, quiet, as_json):
    """Cross-validate a model (patient-grouped, stratified k-fold) and register a final model."""
    from .core.config import CVConfig
    from .core.progress import progress_enabled
    from .registry.store import Registry
    from .training.cv import run_cv

    given = {"architecture": architecture, "folds": folds, "epochs": epochs, "batch_size": batch_size,
             "members": members, "image_size": image_size, "augment": augment, "grouping": grouping,
             "target_sensitivity": target_sensitivity, "learning_rate": learning_rate,
             "lr_schedule": lr_schedule, "bn_refresh": bn_refresh, "threshold_rule": threshold_rule,
             "ensemble": ensemble, "val_fraction": val_fraction, "precision": precision, "xla": xla,
             "seed": seed, "jpeg_draft": jpeg_draft or None}
    if plan and (resume or only_fold):
        raise click.UsageError("--plan starts a run folder: it cannot take --resume or --only-fold")
    if only_fold is not None and not resume:
        raise click.UsageError("--only-fold needs --resume DIR (a folder made with --plan)")
    if only_fold is not None and (data_dir or options or skip_bad or no_final or name or recipe
                                  or any(v is not None for v in given.values())):
        raise click.UsageError("--only-fold takes every setting from the run folder: give only "
                               "--resume DIR, --only-fold K and --quiet/--json")
    config, overrides = None, None
    if resume is None:
        config = _config(CVConfig, given, options, skip_bad, recipe)
    else:  # only what was given again, compared with the run's own settings
        overrides = {k: v for k, v in given.items() if v is not None}
        if recipe:  # given again: its settings (with the options given) must be the run's
            from .core.catalog import RECIPE_FIELDS
            from .models.recipes import recipe_config

            full = recipe_config(recipe, CVConfig, **overrides).to_dict()
            overrides = {**{k: full[k] for k in (*RECIPE_FIELDS, "recipe")}, **overrides}
        overrides |= {"options": _parse_options(options)} if options else {}
        overrides |= {"skip_bad": True} if skip_bad else {}
    notices = (lambda line: None) if quiet or as_json else (lambda line: click.echo(line, err=True))
    if plan:
        return _cv_plan(config, data_dir, output, Registry(registry_root), name, notices, as_json)
    if only_fold is not None:
        return _cv_one_fold(resume, only_fold, progress_enabled(quiet or as_json), notices, as_json)
    result = run_cv(config, data_dir, output=output, resume=resume, final=not no_final,
                    registry=Registry(registry_root), name=name, overrides=overrides,
                    progress=progress_enabled(quiet or as_json), echo=notices)
    if as_json:
        _echo_json(result.to_dict())
    else:
        _cv_report(result)


def _cv_plan(config, data_dir, output, registry, name, notices, as_json) -> None:
    from .training.cv import plan_cv

    out = plan_cv(config, data_dir, output=output, registry=registry, name=name, echo=notices)
    k = config.folds
    if as_json:
        _echo_json({"output": str(out), "folds": k})
    else:
        click.echo(f"planned {k} folds in {out}\nrun each fold (any number at once):  pneumokit cv "
                   f"--resume {out} --only-fold K   (K = 1..{k}, or --only-fold env in a job array)\n"
                   f"then finish:  pneumokit cv --resume {out}")


def _cv_one_fold(resume, only_fold, progress: bool, notices, as_json) -> None:
    from .training.cv import fold_from_env, run_fold

    k = fold_from_env(only_fold, os.environ)
    fold = run_fold(resume, k, progress=progress, echo=notices)
    summary = {"fold": fold.fold, "images": len(fold.paths), "best_epoch": fold.best_epoch,
               "metrics": fold.metrics, "trained": fold.trained,
               "output": str(Path(resume) / "folds" / f"fold_{k}.json")}
    if as_json:
        _echo_json(summary)
    else:
        scored = f"held-out AUC {fold.metrics['auc']:.4f} on {len(fold.paths)} images"
        click.echo(f"fold {k}: {scored}; wrote {summary['output']}" if fold.trained else
                   f"fold {k} already done (unchanged): {scored} in {summary['output']}")


def _cv_report(result) -> None:
    """The lines ``pneumokit cv`` prints about a finished run."""
    from .training.cv import format_table

    c = result.config
    click.echo(f"{c.folds}-fold cross-validation of {c.architecture} ({c.grouping}-grouped), "
               f"{len(result.oof)} images, {result.wall_s / 60:.1f} min")
    click.echo(format_table(result.summary))
    t = result.tuned_summary
    click.echo("held-out folds at thresholds chosen on each fold's inner validation split: "
               + "  ".join(f"{k} {t[k]['mean']:.4f} ± {t[k]['std']:.4f}"
                           for k in ("accuracy", "recall", "specificity")))
    cal = result.calibration
    click.echo(f"calibration: temperature {cal['temperature']:.3f} fitted on the pooled out-of-fold "
               f"predictions; Brier {cal['brier_uncalibrated']:.4f} -> {cal['brier']:.4f}, "
               f"ECE {cal['ece_uncalibrated']:.4f} -> {cal['ece']:.4f}")
    m = result.oof_metrics["at_threshold"]
    click.echo(f"threshold {result.threshold:.4f} ({result.threshold_rule}); out-of-fold at it: "
               + "  ".join(f"{k} {m[k]:.4f}" for k in ("accuracy", "recall", "specificity")))
    if c.ensemble and result.version is not None:
        click.echo(f"model: the mean of the {c.folds} fold models (no final fit)")
    if result.version is not None:
        click.echo(f"registered {result.version.ref} at {result.version.path}")
        _gate_fitted(result.version.metadata)
    click.echo(f"results in {result.output}")


@main.group("registry")
def registry_group() -> None:
    """List, inspect, alias and delete registered models."""


@registry_group.command("list")
@registry_option
@json_option
def registry_list(registry_root, as_json):
    """List registered models with their versions and aliases."""
    from .registry.store import Registry

    reg = Registry(registry_root)
    rows = reg.list()
    if as_json:
        _echo_json(rows)
    elif not rows:
        click.echo(f"no models in {reg.root}")
    else:
        click.echo(_table([{**r, "versions": ",".join(map(str, r["versions"])),
                            "aliases": ", ".join(f"{a}={v}" for a, v in r["aliases"].items()),
                            "problems": len(r["problems"]) or ""}
                           for r in rows], ["name", "latest", "versions", "aliases", "problems"]))
        for problem in (p for r in rows for p in r["problems"]):
            click.echo(f"damaged: {problem}", err=True)


@registry_group.command("show")
@click.argument("ref")
@registry_option
@json_option
def registry_show(ref, registry_root, as_json):
    """Show one version's metadata (REF: name, name:3 or name@alias)."""
    from .registry.store import Registry

    mv = Registry(registry_root).get(ref)
    if as_json:
        _echo_json({"ref": mv.ref, "path": str(mv.path), "metadata": mv.metadata})
        return
    try:
        lines = _summary(mv)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise click.ClickException(
            f"{mv.path / METADATA_FILE}: incomplete or edited ({type(exc).__name__}: {exc}); "
            f"check it with `pneumokit registry verify {mv.ref}`, or print it with --json") from exc
    click.echo("\n".join(lines))


@registry_group.command("card")
@click.argument("ref")
@registry_option
@json_option
def registry_card(ref, registry_root, as_json):
    """Print a version's model card: intended use, training data, evaluation, calibration, input
    gate, site evaluations, lineage, export, limitations (model_card.md in the version folder)."""
    from .registry.store import Registry

    try:
        mv, facts, text = Registry(registry_root).card(ref)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise click.ClickException(
            f"{ref}: its metadata.json is incomplete or edited ({type(exc).__name__}: {exc}); check it "
            "with `pneumokit registry verify`, or print it with `pneumokit registry show --json`") from exc
    if as_json:
        _echo_json({"ref": mv.ref, "path": str(mv.path / CARD_FILE), "card": facts})
    else:
        click.echo(text, nl=False)


def _summary(mv) -> list[str]:
    """The lines of ``registry show`` for one version."""
    meta = mv.metadata
    lines = [f"{mv.ref}  ({mv.path})"]
    lines.append(f"  created: {meta.get('created_at')}  architecture: {meta['architecture']['name']} "
                 f"({meta['architecture']['plugin']} {meta['architecture']['plugin_version']})")
    rule = f" ({meta['threshold_rule']})" if meta.get("threshold_rule") else ""
    lines.append(f"  input: {meta['image_size']}x{meta['image_size']}x{meta['channels']}  "
                 f"threshold: {meta['threshold']:.4f}{rule}")
    if meta.get("calibration"):
        cal = meta["calibration"]
        lines.append(f"  calibration: temperature {cal['temperature']:.3f} (Brier {cal['brier']:.4f}, "
                     f"ECE {cal['ece']:.4f})")
    members, seed = meta.get("config", {}).get("members", 1), meta.get("config", {}).get("seed")
    if meta.get("ensemble"):
        lines.append(f"  ensemble: mean of {meta['ensemble']['folds']} fold models"
                     + (f" of {members} networks each" if members > 1 else ""))
    elif members > 1:
        lines.append(f"  ensemble: mean of {members} networks' logits (seeds {seed}..{seed + members - 1})")
    recipe = meta.get("recipe")
    if isinstance(recipe, dict):
        changed = ", ".join(f"{k}={v}" for k, v in (recipe.get("overridden") or {}).items())
        lines.append(f"  recipe: {recipe['name']} ({recipe.get('plugin') or 'not installed'})"
                     + (f", with {changed}" if changed else ""))
    for key, value in meta.get("metrics", {}).items():
        value = value.get("at_threshold", value) if isinstance(value, dict) else value
        if isinstance(value, dict) and "auc" in value:
            lines.append(f"  {key}: " + "  ".join(
                f"{k} {_figure(value[k])}" for k in ("auc", "accuracy", "recall", "specificity")))
    lineage = meta.get("lineage")
    if lineage:
        site = lineage["site"]
        lines.append(f"  adapted from: {lineage['parent']} on {site['images']} images of {site['patients']} "
                     f"patients ({site['data']}, sha256 {site['fingerprint']['sha256'][:12]})")
        lines.append(f"  changed: {lineage['changed']}")
    onnx_info = meta.get("onnx")
    if onnx_info:
        lines.append(f"  onnx: opset {onnx_info['opset']}, parity max |diff| "
                     f"{onnx_info['parity']['max_abs_diff']:.2e}")
    lines.append("  artifacts: " + ", ".join(sorted(meta.get("artifacts", {}))))
    evaluations = meta.get("evaluations") or []
    lines.append(f"  card: {mv.path / CARD_FILE} ({len(evaluations)} site evaluation(s); "
                 f"`pneumokit registry card {mv.ref}`)")
    return lines


def _figure(value) -> str:
    """A metric as ``0.9876``, or a CV summary ``{"mean", "std"}`` as ``0.9876 ± 0.0012``."""
    if isinstance(value, dict):
        return f"{value['mean']:.4f} ± {value['std']:.4f}"
    return f"{value:.4f}"


@registry_group.command("alias")
@click.argument("name")
@click.argument("alias")
@click.argument("version", type=click.IntRange(1))
@registry_option
def registry_alias(name, alias, version, registry_root):
    """Point NAME@ALIAS at VERSION (e.g. production)."""
    from .registry.store import Registry

    Registry(registry_root).set_alias(name, alias, version)
    click.echo(f"{name}@{alias} -> {name}:{version}")


@registry_group.command("delete")
@click.argument("ref")
@click.option("--force", is_flag=True, help="Delete even if aliases point to it (they are removed).")
@click.option("--all", "all_versions", is_flag=True,
              help="REF is a model name: delete every version of it, and its aliases.")
@click.option("--yes", is_flag=True, help="With --all: do not ask for confirmation.")
@registry_option
def registry_delete(ref, force, all_versions, yes, registry_root):
    """Delete one version (REF: name:3 or name@alias), even a damaged one; or every version
    of a model with --all."""
    from .registry.store import Registry, validate_name

    reg = Registry(registry_root)
    if not all_versions:
        click.echo(f"deleted {reg.delete(ref, force=force)}")
        return
    if ":" in ref or "@" in ref:
        raise click.UsageError(f"--all deletes every version of a model: give its name, not {ref!r}")
    name = validate_name(ref)
    versions = [r["versions"] for r in reg.list() if r["name"] == name]
    if versions and not yes:
        click.confirm(f"delete all {len(versions[0])} version(s) of {name} in {reg.root}?", abort=True)
    deleted = reg.delete_all(name)
    click.echo(f"deleted {name}: versions {', '.join(map(str, deleted))} and its aliases")


@registry_group.command("verify")
@click.argument("ref", required=False)
@click.option("--run", is_flag=True,
              help="Also re-score each exported version's golden self-test vectors with onnxruntime.")
@registry_option
@json_option
def registry_verify(ref, run, registry_root, as_json):
    """Re-check every artifact's sha256 and the metadata/ONNX agreement (REF, or every version);
    with --run, re-score the golden vectors stored at export (docs/deploy.md).

    Exit status 1 if any problem is found.
    """
    from .inference.verify import verify
    from .registry.store import Registry

    reports = verify(Registry(registry_root), ref, run=run)
    if as_json:
        _echo_json(reports)
    else:
        for r in reports:
            ran = (f" ({r['golden']} golden vectors re-scored)" if r.get("golden") and not r["problems"]
                   else "")
            click.echo(f"{r['ref']}: " + ("ok" + ran if not r["problems"] else
                                          f"{len(r['problems'])} problem(s)"))
            for line in r["problems"] + ([f"note: {r['note']}"] if r.get("note") else []):
                click.echo(f"  {line}")
        if not reports:
            root = Registry(registry_root).root
            click.echo(f"no versions in {root}" + ("" if root.is_dir() else " (no such folder)"))
    if any(r["problems"] for r in reports):
        sys.exit(1)


@main.command("export")
@click.argument("ref")
@click.option("--opset", type=click.IntRange(13), default=C.DEFAULT_OPSET, show_default=True,
              help="ONNX opset.")
@click.option("--heatmap", is_flag=True,
              help="Add a second output, 'heatmap': the class activation map (docs/explain.md).")
@click.option("--int8", is_flag=True,
              help="Also write model.int8.onnx, statically quantised and checked on held-out images "
                   "(docs/onnx.md#int8); the float model is exported first if it is not yet.")
@click.option("--int8-data", "data_dir", type=click.Path(exists=True),
              help="--int8: labelled held-out images, a dataset folder (its test/ split) or a CSV manifest "
                   "(its test rows, or all without a split column; the manifest options below apply) "
                   "(default: the test/ split of the version's training data folder).")
@manifest_options
@click.option("--calibration-data", type=click.Path(exists=True),
              help="--int8: a dataset folder or manifest whose train/ images calibrate the ranges "
                   "(default: the version's training images, else the bundled demo set).")
@click.option("--int8-max-auc-change", type=click.FloatRange(0, 1), default=None,
              help="--int8: refuse when the held-out AUC changes by more (default 0.003).")
@click.option("--int8-max-accuracy-change", type=click.FloatRange(0, 1), default=None,
              help="--int8: refuse when the accuracy at the stored threshold changes by more (default 0.01).")
@click.option("--int8-warn", is_flag=True, help="--int8: above a bound, write the file and warn instead.")
@registry_option
@json_option
def export_command(ref, opset, heatmap, int8, data_dir, calibration_data, int8_max_auc_change,
                   int8_max_accuracy_change, int8_warn, registry_root, as_json):
    """Export a registered model to ONNX (parity-checked) in its version folder."""
    from .inference.export import ONNX_FILE, export
    from .registry.store import Registry

    int8_options = {"held_out": data_dir, "calibration": calibration_data,
                    "max_auc_change": int8_max_auc_change, "max_accuracy_change": int8_max_accuracy_change,
                    "warn": int8_warn or None}
    given = [k for k, v in int8_options.items() if v is not None]
    if given and not int8:
        flag = {"held_out": "--int8-data", "calibration": "--calibration-data", "warn": "--int8-warn"}.get(
            given[0], f"--int8-{given[0].replace('_', '-')}")
        raise click.UsageError(f"{flag} is for --int8: add --int8, or leave {flag} out")
    registry = Registry(registry_root)
    result = None
    if not int8 or ONNX_FILE not in registry.get(ref).metadata.get("artifacts", {}):
        if int8:
            _int8_precheck(registry, ref, int8_options)  # a bad option fails before the export, not after
        result = export(ref, registry, opset=opset, heatmap=heatmap)
    quantized = _export_int8(registry, ref, int8_options) if int8 else None
    if as_json:
        _echo_json({**(result.to_dict() if result else {"ref": quantized.ref}),
                    **({"int8": quantized.to_dict()} if quantized else {})})
        return
    if result is not None:
        extra = f", heatmap {result.heatmap[0]}x{result.heatmap[1]}" if result.heatmap else ""
        click.echo(f"exported {result.ref} to {result.path} (opset {result.opset}{extra}); parity on "
                   f"{result.parity_images} demo images: max |keras - onnx| = {result.max_abs_diff:.2e}")
    if quantized is not None:
        _print_int8(quantized)


def _int8_options(options: dict) -> dict:
    from .inference.quantize import MAX_ACCURACY_CHANGE, MAX_AUC_CHANGE

    defaults = {"max_auc_change": MAX_AUC_CHANGE, "max_accuracy_change": MAX_ACCURACY_CHANGE, "warn": False}
    return {k: defaults[k] if v is None and k in defaults else v for k, v in options.items()}


def _int8_precheck(registry, ref: str, options: dict) -> None:
    """What ``--int8`` would refuse for its options or data, checked before the float export."""
    from .inference.quantize import INT8_FILE, calibration_images, held_out_images

    mv = registry.get(ref)
    registry.check_new_artifacts(mv, [INT8_FILE])
    held = held_out_images(mv, options["held_out"])[2]
    calibration_images(mv, options["calibration"], exclude=held["sha256"])


def _export_int8(registry, ref: str, options: dict):
    from .inference.quantize import quantize

    return quantize(ref, registry, **_int8_options(options))


def _print_int8(result) -> None:
    r = result.record
    p, held, cal = r["parity"], r["held_out"], r["calibration"]
    gate = p.get("gate")
    gate_text = f", {gate['decisions_changed']} gate decisions changed" if gate else ""
    click.echo(f"int8: wrote {result.path} ({r['format']}; {r['quantized_nodes']} nodes of "
               f"{'/'.join(r['operators'])}, weights int8 per channel, {cal['images']} calibration images "
               f"from {cal['which']})")
    click.echo(f"int8: on {held['images']} held-out images ({held['left_out_as_training_images']} left "
               f"out as training images): max |dp| = {p['max_abs_probability_change']:.3g}, AUC "
               f"{p['auc']['float32']:.4f} -> {p['auc']['int8']:.4f} ({p['auc']['change']:+.4f}, bound "
               f"{r['bounds']['auc_change']:g}), accuracy {p['accuracy']['float32']:.4f} -> "
               f"{p['accuracy']['int8']:.4f} ({p['accuracy']['change']:+.4f}, bound "
               f"{r['bounds']['accuracy_change']:g}), {p['labels_changed']} labels{gate_text}")
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)


@main.command("predict")
@click.argument("model")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", type=click.Path(dir_okay=False), help="Write the rows to this CSV file.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None,
              help="Decision threshold (default: the model's).")
@click.option("--batch-size", type=click.IntRange(1), default=C.INFERENCE_BATCH_SIZE, show_default=True)
@click.option("--providers", default="auto", show_default=True,
              help="onnxruntime providers: auto (CUDA then CPU), cpu or cuda.")
@click.option("--tf32", is_flag=True,
              help="Let CUDA use TF32 math: faster on some models, probabilities move by up to ~2e-3 "
                   "(default: full float32).")
@click.option("--heatmap", "heatmap_dir", type=click.Path(file_okay=False),
              help="Also write a heatmap overlay PNG per image into this folder (needs a model "
                   "exported with --heatmap).")
@click.option("--dicom-out", type=click.Path(),  # a file here is refused in one line, before scoring
              help="For DICOM inputs, also write a DICOM SR of the finding and a DICOM SC of the heatmap "
                   "overlay (SC: a model exported with --heatmap) into this folder (docs/data.md).")
@gate_option
@registry_option
@json_option
def predict_command(model, inputs, output, threshold, batch_size, providers, tf32, heatmap_dir, dicom_out,
                    gate, registry_root, as_json):
    """Score images with an exported model (MODEL: a .onnx file or a registry ref).

    INPUTS are image files or folders (searched recursively). Exit status 1
    if any file could not be read. In Python: ``pneumokit.predict``.
    """
    from .inference.predict import predict
    from .registry.store import Registry

    result = predict(model, inputs, output=output, heatmap_dir=heatmap_dir, dicom_out=dicom_out,
                     threshold=threshold, batch_size=batch_size, providers=providers, tf32=tf32,
                     gate=gate == "on", registry=Registry(registry_root))
    if as_json:
        _echo_json(result.to_dict())
    else:
        if tf32 and not result.tf32:
            click.echo(f"note: --tf32 applies to CUDA only; this run is on {result.providers[0]}", err=True)
        click.echo(f"# {result.model} on {result.providers[0]}{' (TF32)' if result.tf32 else ''}", err=True)
        click.echo(_result_rows(result.rows))
    _gate_notice(result.gate, result.rows)
    for line in result.notes:
        click.echo(line, err=True)
    if result.failed:
        click.echo(f"{len(result.failed)} of {len(result.rows)} file(s) could not be read", err=True)
        sys.exit(1)


@main.command("serve")
@click.argument("model")
@click.option("--host", default=C.DEFAULT_HOST, show_default=True,
              help="Address to listen on (0.0.0.0: every interface; put a reverse proxy in front).")
@click.option("--port", type=click.IntRange(1, 65535), default=C.DEFAULT_PORT, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Processes, each with its own copy of the model.")
@click.option("--providers", default="auto", show_default=True,
              help="onnxruntime providers: auto (CUDA then CPU), cpu or cuda.")
@click.option("--max-upload-mb", type=click.FloatRange(0.001, 1024), default=C.MAX_UPLOAD_MB,
              show_default=True, callback=lambda ctx, param, v: _finite(param, v),
              help="Refuse request bodies over this many MB (10^6 bytes) with 413.")
@click.option("--max-files", type=click.IntRange(1, 10000), default=C.MAX_UPLOAD_FILES, show_default=True,
              help="Most image files in one request.")
@click.option("--max-concurrent", type=click.IntRange(1, 256), default=C.MAX_CONCURRENT, show_default=True,
              help="Requests decoded and scored at once per worker; the others wait.")
@click.option("--max-pending-mb", type=click.FloatRange(1, 100_000), default=C.MAX_PENDING_MB,
              show_default=True, callback=lambda ctx, param, v: _finite(param, v),
              help="MB of request bodies held at once per worker; more gets 503 with Retry-After.")
@click.option("--request-timeout", type=click.FloatRange(0.1, 3600), default=C.REQUEST_TIMEOUT,
              show_default=True, callback=lambda ctx, param, v: _finite(param, v),
              help="Seconds a client has for its request headers, and as many for its body.")
@click.option("--access-log", is_flag=True, help="Log every request (uvicorn's access log).")
@registry_option
def serve_command(model, host, port, workers, providers, max_upload_mb, max_files, max_concurrent,
                  max_pending_mb, request_timeout, access_log, registry_root):
    """Serve an exported model over HTTP: a page at /, and the JSON API /v1/predict, /v1/model,
    /health (MODEL: a .onnx file or a registry ref). See docs/serve.md."""
    from .inference.serve import run

    limits = {"max_upload_mb": max_upload_mb, "max_files": max_files, "max_concurrent": max_concurrent,
              "max_pending_mb": max_pending_mb, "request_timeout": request_timeout}
    run(model, registry_root=registry_root, host=host, port=port, workers=workers, providers=providers,
        limits=limits, access_log=access_log)


def _finite(param, value: float) -> float:
    if value != value:  # click's FloatRange lets NaN through
        raise click.BadParameter(f"{value!r} is not a number", param=param)
    return value


@main.command("explain")
@click.argument("model")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", type=click.Path(file_okay=False),
              help="Folder for the overlay PNGs (default runs/explain/NAME-vVERSION).")
@click.option("--method", type=click.Choice(C.EXPLAIN_METHODS), default="auto", show_default=True,
              help="auto: the ONNX file's heatmap output if it has one, else CAM from the Keras model, "
                   "else Grad-CAM.")
@gate_option
@registry_option
@json_option
def explain_command(model, inputs, output, method, gate, registry_root, as_json):
    """Draw where the model looked: a heatmap overlay PNG per image, with its probability.

    MODEL is a registry ref (or a .onnx file exported with --heatmap); INPUTS are
    image files or folders. See docs/explain.md for what the heatmap means.
    """
    from .inference.explain import explain
    from .inference.runtime import expand_inputs
    from .registry.store import Registry

    paths = expand_inputs(inputs)
    if not paths:
        raise click.ClickException(f"no images found in {', '.join(inputs)}")
    report = explain(model, paths, output=output, registry=Registry(registry_root), method=method,
                     gate=gate == "on")
    rows = report["explanations"]
    if as_json:
        _echo_json(report)
    else:
        click.echo(f"# {report['model']}: {report['method']} heatmaps by {report['engine']}", err=True)
        click.echo(_result_rows([{**r, "overlay": r["file"]} for r in rows], ("overlay",)))
    _gate_notice(report["gate"], rows)
    failed = [r for r in rows if r["error"]]
    if failed:
        click.echo(f"{len(failed)} of {len(rows)} file(s) could not be read", err=True)
        sys.exit(1)


@main.command("evaluate")
@click.argument("ref")
@data_option
@click.option("--split", default="test", show_default=True, help="Which split to score.")
@click.option("--output", type=click.Path(file_okay=False),
              help="Folder for metrics.json, predictions.csv, roc.png, confusion.png "
                   "(default runs/evaluate/NAME-vVERSION-SPLIT).")
@click.option("--skip-bad", is_flag=True, help="Leave out unusable images (each is listed).")
@click.option("--require", multiple=True, metavar="FIGURE>=X",
              help="An acceptance criterion, e.g. \"sensitivity>=0.95\" (repeatable; figures: auc, accuracy, "
                   "sensitivity, specificity, ppv, npv, brier). Exit 1 when one fails.")
@click.option("--judge-on", type=click.Choice(["bound", "estimate"]), default="bound", show_default=True,
              help="Judge criteria on the 95% interval's bound (>= on the lower, <= on the upper) or the "
                   "point estimate.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@gate_option
@registry_option
@json_option
def evaluate_command(ref, data_dir, split, output, skip_bad, require, judge_on, seed, gate, registry_root,
                     as_json):
    """Score REF on a split or a manifest: a site acceptance test (docs/site.md).

    Accuracy, sensitivity, specificity, PPV, NPV and AUC with 95% confidence intervals (a
    bootstrap over patients), calibration, the model's own estimate beside them, and a verdict
    per --require criterion (exit 1 if one fails). Writes report.html (opens offline) and JSON.
    Images the input gate flags are counted and left out; the metrics are of the rest."""
    from .inference.evaluate import evaluate
    from .registry.store import Registry

    report = evaluate(ref, data_dir, split=split, registry=Registry(registry_root), output=output,
                      skip_bad=skip_bad, gate=gate == "on", require=require, judge_on=judge_on, seed=seed)
    if as_json:
        _echo_json(report)
    else:
        _print_evaluation(report)
    if report["accepted"] is False:
        sys.exit(1)


@main.command("adapt")
@click.argument("ref")
@data_option
@click.option("--epochs", type=int, default=None, help=f"Fine-tuning epochs (default {C.ADAPT_EPOCHS}).")
@click.option("--learning-rate", type=float, default=None,
              help=f"Adam's learning rate (default {C.ADAPT_LEARNING_RATE:g}).")
@click.option("--batch-size", type=int, default=None, help=f"Batch size (default {C.ADAPT_BATCH_SIZE}).")
@click.option("--folds", type=int, default=None,
              help=f"Cross-fitting folds for the before/after figures (default {C.ADAPT_FOLDS}).")
@click.option("--seed", type=int, default=None, help=f"Random seed (default {C.DEFAULT_SEED}).")
@click.option("--name", default=None, help="Register under this name (default: the parent's).")
@click.option("--force", is_flag=True, help="Register even when the adapted model is worse on the site.")
@click.option("--skip-bad", is_flag=True, help="Leave out unusable images (each is listed).")
@registry_option
@json_option
def adapt_command(ref, data_dir, epochs, learning_rate, batch_size, folds, seed, name, force, skip_bad,
                  registry_root, as_json):
    """Fine-tune REF on a site's labelled images and register the adapted version (docs/site.md).

    The before/after figures are on the site's own patients, cross-fitted: each is scored by a
    model tuned without them. An adapted model worse there (AUC or accuracy clearly lower, or
    both lower) is not registered without --force; exit 1 then."""
    from .core.config import AdaptConfig
    from .inference.adapt import adapt
    from .registry.store import Registry

    given = {"epochs": epochs, "learning_rate": learning_rate, "batch_size": batch_size, "folds": folds,
             "seed": seed}
    config = AdaptConfig(**{k: v for k, v in given.items() if v is not None}, skip_bad=skip_bad)
    result = adapt(ref, data_dir, config=config, registry=Registry(registry_root), name=name, force=force,
                   echo=(lambda line: None) if as_json else (lambda line: click.echo(line, err=True)))
    if as_json:
        _echo_json(result.to_dict())
    else:
        _print_adaptation(result)
    if result.version is None:
        sys.exit(1)


def _print_adaptation(result) -> None:
    site = result.site
    click.echo(f"{result.parent} adapted on {site['images']} images of {site['patients']} patients "
               f"({site['data']}); figures cross-fitted on those patients, 95% CI")

    def cell(r, k):
        ci = r["ci"][k]
        return f"{r['estimate'][k]:.4f}" + ("" if ci is None else f" ({ci[0]:.4f}-{ci[1]:.4f})")
    rows = [{"figure": k, "before": cell(result.before, k), "after": cell(result.after, k)}
            for k in ("auc", "accuracy", "sensitivity", "specificity", "brier")]
    click.echo(_table(rows, ["figure", "before", "after"]))
    for k, d in result.differences.items():
        click.echo(f"{k} after - before: {d['estimate']:+.4f}" + ("" if d["ci"] is None else
                   f" (paired 95% CI {d['ci'][0]:+.4f} to {d['ci'][1]:+.4f})"))
    if result.worse:
        click.echo(f"the adapted model is worse on this site's patients in {' and '.join(result.worse)}"
                   + ("" if result.version is None else "; registered anyway (--force)"), err=True)
    if result.version is None:
        click.echo("not registered: pass --force to register it anyway", err=True)
    else:
        click.echo(f"registered {result.version.ref} at {result.version.path} "
                   f"(recalibrated on the site: logit / {result.temperature:.3f} {result.shift:+.3f}; "
                   f"threshold {result.threshold:.4f})")


def _print_evaluation(report: dict) -> None:
    click.echo(f"{report['ref']} on {report['split']} ({report['images']} images) with {report['engine']}")
    for line in report["warnings"]:
        click.echo(line, err=True)
    if report.get("one_class"):
        click.echo(f"warning: {report['one_class']}", err=True)
    seen = report["images_seen_in_training"]
    if seen:
        click.echo(f"warning: {seen} of these {report['images']} images were in this model's training "
                   "data: these figures say nothing about new patients", err=True)
    elif seen == 0:
        click.echo("none of these images was in the model's training data")
    g = report["gate"]
    if g["state"] == "on":
        why = "; ".join(f"{n}: {k}" for k, n in g["reasons"].items())
        click.echo(f"input gate: {g['flagged']} of {report['images']} image(s) out of scope, left out"
                   + (f" ({why})" if why else ""))
    else:
        _gate_notice(g["state"], [])
    rows = []
    for key, label in (("at_threshold", f"threshold {report['threshold']:.3f}"), ("at_0.5", "0.5")):
        m = report[key]
        rows.append({"at": label, **{k: f"{m[k]:.4f}" for k in
                                     ("accuracy", "precision", "recall", "specificity", "f1", "auc")},
                     "confusion [[tn, fp], [fn, tp]]": str(m["confusion_matrix"])})
    click.echo(_table(rows, ["at", "accuracy", "precision", "recall", "specificity", "f1", "auc",
                             "confusion [[tn, fp], [fn, tp]]"]))
    click.echo(_acceptance_table(report))
    for c in report["criteria"]:
        click.echo(f"{'PASS' if c['passed'] else 'FAIL'}  {c['requirement']}  ({c['judged_on']} "
                   f"{'n/a' if c['judged_value'] is None else format(c['judged_value'], '.4f')})")
    if report["accepted"] is not None:
        click.echo("ACCEPTED" if report["accepted"] else "NOT ACCEPTED: a criterion failed")
    if report.get("recorded"):
        click.echo(f"recorded against {report['ref']}: its model card lists this run "
                   f"(`pneumokit registry card {report['ref']}`)")
    click.echo("wrote " + ", ".join(report["files"].values()))


def _acceptance_table(report: dict) -> str:
    """Each figure at the stored threshold with its 95% interval, beside the model's own estimate."""
    from .training.intervals import FIGURES

    est = report["model_estimate"] or {}
    def num(v):
        return "" if v is None or v != v else f"{v:.4f}"
    rows = [{"figure": k, "site": num(v), "95% ci": "" if report["ci95"][k] is None else
             f"{report['ci95'][k][0]:.4f}-{report['ci95'][k][1]:.4f}", "model's estimate": num(est.get(k))}
            for k, v in ((k, report["figures"][k]) for k in FIGURES)]
    note = (f"{report['patients']} patients; 95% CI: {report['ci_method']['method']}; model's estimate: "
            f"{est.get('source', 'not recorded')}")
    return _table(rows, ["figure", "site", "95% ci", "model's estimate"]) + "\n" + note


if __name__ == "__main__":
    sys.exit(main())
