"""The ``pneumokit`` command line: thin click shells over the Python API."""

from __future__ import annotations

import json
import sys

import click

from . import __version__
from .plugins import loaded


def _echo_json(data) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pneumokit")
def main() -> None:
    """Train, cross-validate, version, export and serve chest X-ray pneumonia classifiers."""


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


@main.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
def plugins_command(as_json: bool) -> None:
    """List plugin distributions, their hooks, what they registered, and errors."""
    records = [p.to_dict() for p in loaded().plugins]
    if as_json:
        _echo_json(records)
        return
    for r in records:
        click.echo(f"{r['name']} {r['version']}{' (built-in)' if r['builtin'] else ''}")
        click.echo(f"  hooks: {', '.join(r['hooks']) or '-'}")
        click.echo(f"  architectures: {', '.join(r['architectures']) or '-'}")
        click.echo(f"  augmentations: {', '.join(r['augmentations']) or '-'}")
        if r["error"]:
            click.echo(f"  error: {r['error']}")


@main.group("data")
def data_group() -> None:
    """Inspect datasets."""


@data_group.command("check")
@click.argument("data_dir", required=False, type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def data_check(data_dir: str | None, as_json: bool) -> None:
    """Check a dataset folder (default: the bundled demo set); exit 1 if anything is unusable."""
    from .data import DatasetError, check_report, scan

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
        lines.append(f"file names without a patient id (each its own group): "
                     f"{r['unparsed_patient_ids']}")
    d = r["duplicates"]
    lines.append(f"byte-identical duplicates: {d['groups']} groups, {d['files']} files"
                 f" ({d['groups_across_patients']} groups span several patients)")
    lines.append("modes: " + ", ".join(f"{m} {n}" for m, n in r["modes"].items()))
    w, h = r["sizes"]["width"], r["sizes"]["height"]
    if w:
        lines.append(f"sizes: width {w['min']}..{w['max']} (median {w['median']:g}), "
                     f"height {h['min']}..{h['max']} (median {h['median']:g})")
    if r["problems"]:
        lines.append(f"problems: {len(r['problems'])}")
        lines += [f"  {p['path']}: {p['reason']}" for p in r["problems"]]
        lines.append("not usable: fix these, or train with --skip-bad to leave bad files out")
    else:
        lines.append("problems: none — usable")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
