"""Command line: ``rmm2sigma convert`` and ``rmm2sigma verify``. Thin: the work is in the library."""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .targets import TARGETS

if TYPE_CHECKING:
    pass

INPUTS_PER_WORKER = 32
"""With ``--jobs 0``, a worker per this many inputs at most: each worker builds its own five
backends (~0.3 s), which fewer inputs do not pay back."""

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Convert Microsoft Sentinel / Defender KQL hunting queries to Sigma, Splunk, Elastic and KQL.",
)


def _targets(values: list[str] | None) -> dict[str, list[str]]:
    """Each chosen target with its deployable formats (``NAME[:FORMAT]``, case-insensitive)."""
    from .formats import select

    try:
        return select(values or [], TARGETS)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--target") from None


@app.command()
def convert(
    inputs: Annotated[list[str], typer.Argument(help="Files or folders (recursive); '-' reads stdin.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    target: Annotated[
        list[str] | None,
        typer.Option(
            "--target",
            "-t",
            help=f"Targets as NAME[:FORMAT] (repeat or comma-separate): {', '.join(TARGETS)} or any "
            "installed pySigma backend (`rmm2sigma targets` lists them and their formats).",
        ),
    ] = None,
    elastic_index: Annotated[
        list[str] | None,
        typer.Option(
            help="Index pattern Elastic rules read (repeat); default winlogbeat-*, "
            "logs-windows.sysmon_operational-*."
        ),
    ] = None,
    splunk_index: Annotated[
        str | None, typer.Option(help="Splunk index the saved searches read; default the user's.")
    ] = None,
    event_filter: Annotated[
        bool, typer.Option(help="Elastic rules: add the ECS event category of the Sigma log source.")
    ] = True,
    exact: Annotated[bool, typer.Option(help="Keep KQL semantics exactly (term regexes for `has`).")] = False,
    force: Annotated[bool, typer.Option(help="Replace existing files in --out.")] = False,
    author: Annotated[str, typer.Option(help="Sigma `author`.")] = "rmm2sigma",
    date: Annotated[str | None, typer.Option(help="Sigma `date` (YYYY-MM-DD); default today.")] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", "-j", min=0, help="Worker processes; 0: one per core once there are enough inputs."
        ),
    ] = 0,
    verify: Annotated[bool, typer.Option(help="Then prove every rule with the execution oracles.")] = False,
) -> None:
    """Convert queries; writes OUT/sigma_rules, OUT/backends/<target> and OUT/report.json."""
    from .report import summary_table, write_outputs
    from .sigma import Options
    from .sources import MAX_INPUT_BYTES, discover

    selection = _targets(target)
    wanted = list(selection)
    from .formats import DeployOptions

    deploy_options = DeployOptions(splunk_index=splunk_index, event_filter=event_filter)
    if elastic_index:
        deploy_options = replace(deploy_options, elastic_index=tuple(elastic_index))
    try:
        day = dt.date.fromisoformat(date) if date else None
    except ValueError:
        raise typer.BadParameter(f"{date!r} is not a YYYY-MM-DD date", param_hint="--date") from None
    options = Options(author=author, date=day, exact=exact)
    paths = list(discover(inputs))
    missing = [p for p in paths if p != "-" and not Path(p).exists()]
    if not paths or len(missing) == len(paths):
        raise typer.BadParameter(f"no input found: {', '.join(missing or inputs)}", param_hint="INPUTS")
    # one byte over the limit is enough for the size check to refuse it; the rest is never read
    stdin = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1) if "-" in paths else None
    from .convert import available_cores, convert_all

    workers = jobs or min(available_cores(), len(paths) // INPUTS_PER_WORKER)
    results = convert_all(paths, options, wanted, workers, stdin)
    try:
        results, report = write_outputs(results, out, wanted, force, selection, deploy_options)
    except OSError as error:  # report.json refused, or the output folder cannot be written
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(summary_table(report))
    typer.echo(f"\nreport: {out / 'report.json'}")
    deployed = [target for target, formats in selection.items() if formats]
    if deployed:
        typer.echo(f"deployable rules: {out / 'deploy'} ({', '.join(deployed)})")
    failed = any(r.status == "failed" for r in results)
    if verify:
        failed = _verify(out) or failed
    raise typer.Exit(1 if failed else 0)


@app.command("targets")
def targets_command() -> None:
    """List the targets: the five built-in ones, then every installed pySigma backend."""
    from .formats import PLAIN, data, formats_of
    from .plugins import installed

    lines = ["built-in (proven labels):"]
    for name in TARGETS:
        formats = ", ".join([PLAIN, *formats_of(name)])
        lines.append(f"  {name:<12} formats: {formats}")
        lines.append(f"  {'':<12} pipelines: {', '.join(data()['targets'][name]['pipelines'])}")
    lines.append("installed pySigma backends (labels unproven):")
    for name, target in installed().items():
        if name in TARGETS:
            continue
        formats = ", ".join([PLAIN, *(f for f in target.formats if f != "default")])
        lines.append(f"  {name:<12} {target.description}")
        lines.append(f"  {'':<12} formats: {formats}")
        lines.append(
            f"  {'':<12} pipelines: {', '.join(target.default_pipelines) or 'none'}"
            + (f" (installed for it: {', '.join(target.pipelines)})" if target.pipelines else "")
        )
    typer.echo("\n".join(lines))


@app.command("verify")
def verify_command(
    out: Annotated[Path, typer.Argument(help="A folder written by `rmm2sigma convert`.")],
) -> None:
    """Prove each rule in OUT by executing original and converted queries over generated events."""
    raise typer.Exit(1 if _verify(out) else 0)


def _verify(out: Path) -> bool:
    """Run the proof; True when something diverged or could not be checked."""
    try:
        from .verify.run import verify_output
    except ImportError as error:
        typer.echo(
            f"error: the proof needs the verify extra: pip install 'rmm2sigma[verify]' ({error})", err=True
        )
        raise typer.Exit(2) from None
    return verify_output(out, echo=typer.echo)


def main() -> None:
    app()
