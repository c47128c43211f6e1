"""Command line: ``rmm2sigma convert`` and ``rmm2sigma verify``. Thin: the work is in the library."""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Annotated, Any

import typer

from .targets import TARGETS

INPUTS_PER_WORKER = 32
"""With ``--jobs 0``, a worker per this many inputs at most: each worker builds its own five
backends (~0.3 s), which fewer inputs do not pay back."""

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Convert Microsoft Sentinel / Defender KQL hunting queries to Sigma, Splunk, Elastic and KQL.",
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"rmm2sigma {version('rmm2sigma')}")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Convert Microsoft Sentinel / Defender KQL hunting queries to Sigma, Splunk, Elastic and KQL."""


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
    splunk_data_model: Annotated[
        str | None,
        typer.Option(
            metavar="MODEL",
            help="Events Splunk queries read: sysmon (the default) or windows-security (the Security "
            "log: process creation as event 4688; rules it has no event or field for are refused).",
        ),
    ] = None,
    exact: Annotated[bool, typer.Option(help="Keep KQL semantics exactly (term regexes for `has`).")] = False,
    force: Annotated[bool, typer.Option(help="Replace existing files in --out.")] = False,
    author: Annotated[str, typer.Option(help="Sigma `author`.")] = "rmm2sigma",
    date: Annotated[
        str | None,
        typer.Option(help="Sigma `date` (YYYY-MM-DD); default: the source's own date, else 2026-11-23."),
    ] = None,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs", "-j", min=0, help="Worker processes; 0: one per core once there are enough inputs."
        ),
    ] = 0,
    verify: Annotated[bool, typer.Option(help="Then prove every rule with the execution oracles.")] = False,
    time_limit: Annotated[
        float | None,
        typer.Option(
            "--time-limit",
            min=0,
            help="Seconds one input may take before it is reported failed (default 120); 0: no limit.",
        ),
    ] = None,
    apply_filters: Annotated[
        bool,
        typer.Option(
            "--apply-filters", help="Render the queries with the page's false-positive filters (OUT/filters)."
        ),
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print only a JSON summary on stdout; messages go to stderr.")
    ] = False,
) -> None:
    """Convert queries; writes OUT/sigma_rules, OUT/filters, OUT/backends/<target>, OUT/report.json,
    report.md, report.html and layer.json (an ATT&CK Navigator layer)."""
    from .console import progress, source_excerpt
    from .report import failure_lines, summary_table, terminal_text, write_outputs
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
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"{out} exists and is not a folder", param_hint="--out")
    try:
        options = Options(
            author=author,
            date=day,
            exact=exact,
            apply_filters=apply_filters,
            splunk_data_model=splunk_data_model,
        )
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--splunk-data-model") from None
    paths = list(discover(inputs))
    missing = [p for p in paths if p != "-" and not Path(p).exists()]
    if not paths or len(missing) == len(paths):
        raise typer.BadParameter(f"no input found: {', '.join(missing or inputs)}", param_hint="INPUTS")
    # one byte over the limit is enough for the size check to refuse it; the rest is never read
    stdin = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1) if "-" in paths else None
    from .convert import TIME_LIMIT_SECONDS, available_cores, convert_all

    workers = jobs or min(available_cores(), len(paths) // INPUTS_PER_WORKER)
    with progress(len(paths), sys.stderr.isatty() and not quiet) as advance:
        limit = TIME_LIMIT_SECONDS if time_limit is None else time_limit
        results = convert_all(paths, options, wanted, workers, stdin, advance, limit)
    try:
        results, report = write_outputs(
            results, out, wanted, force, stdin=stdin, deploy=selection, deploy_options=deploy_options
        )
    except FileExistsError as error:  # a report file refused: every file in the way is named
        for line in str(error).splitlines():
            typer.echo(f"error: {line}", err=True)
        raise typer.Exit(1) from None
    except OSError as error:  # the output folder cannot be written
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None

    def excerpt(entry: dict[str, Any]) -> list[str]:
        return source_excerpt(entry, stdin)

    if as_json:
        from .reports import json_summary

        failures = failure_lines(report, excerpt)
        if failures:
            typer.echo(terminal_text(failures[1:]), err=True)
        typer.echo(json_summary(report))
    else:
        typer.echo(summary_table(report, excerpt))
        typer.echo(f"\nreports: {out / 'report.json'}, report.md, report.html, layer.json")
    deployed = [target for target, formats in selection.items() if formats]
    if deployed and not as_json:
        typer.echo(f"deployable rules: {out / 'deploy'} ({', '.join(deployed)})")
    failed = any(r.status == "failed" for r in results)
    if verify:
        failed = _verify(out, as_json) or failed
    raise typer.Exit(1 if failed else 0)


@app.command("targets")
def targets_command() -> None:
    """List the targets: the five built-in ones, then every installed pySigma backend."""
    from .formats import PLAIN, formats_of
    from .plugins import installed
    from .targets import data_models

    lines = ["built-in (proven labels):"]
    for name in TARGETS:
        formats = ", ".join([PLAIN, *formats_of(name)])
        lines.append(f"  {name:<12} formats: {formats}")
        models = data_models(name)
        for index, (model, spec) in enumerate(models.items()):
            chosen = f" (--{name}-data-model {model}{', the default' if index == 0 else ''})"
            lines.append(
                f"  {'':<12} data model {model}{chosen if len(models) > 1 else ''}: "
                f"pipelines {', '.join(spec['pipelines'])}"
            )
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


@app.command("setup-kusto")
def setup_kusto(
    directory: Annotated[
        Path | None, typer.Argument(help="Install folder; default ~/.cache/rmm2sigma/kusto.")
    ] = None,
) -> None:
    """Install Microsoft's Kusto.Language parser (npm) so `verify` also validates the emitted KQL."""
    from .verify.kusto_language import ENV_VAR, install_kusto, user_tools_dir

    try:
        folder = install_kusto(directory)
    except RuntimeError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Kusto.Language installed in {folder}")
    if directory is not None and directory.resolve() != user_tools_dir().resolve():
        typer.echo(f"set {ENV_VAR}={folder} so that `rmm2sigma verify` finds it")


@app.command("contrib")
def contrib_command(
    inputs: Annotated[list[str], typer.Argument(help="Sentinel query files or folders (recursive).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for the pull-request pack.")],
    sigmahq_repo: Annotated[
        Path | None, typer.Option(help="A SigmaHQ/sigma checkout: its rules decide what is covered.")
    ] = None,
    snapshot: Annotated[
        Path | None, typer.Option(help="A SigmaHQ snapshot tarball (unpacks into sigma/), if no checkout.")
    ] = None,
    author: Annotated[str, typer.Option(help="Sigma `author`.")] = "rmm2sigma",
    date: Annotated[
        str | None,
        typer.Option(help="Sigma `date` (YYYY-MM-DD): the day of your pull request; default 2026-11-23."),
    ] = None,
) -> None:
    """Write a SigmaHQ pull request: new rules in their layout, PULL_REQUEST.md and contrib.json."""
    import tempfile

    from .contrib import contrib
    from .sigma import DEFAULT_DATE
    from .sigmahq import unpack_snapshot

    try:
        day = dt.date.fromisoformat(date) if date else DEFAULT_DATE
    except ValueError:
        raise typer.BadParameter(f"{date!r} is not a YYYY-MM-DD date", param_hint="--date") from None
    with tempfile.TemporaryDirectory() as temporary:
        if sigmahq_repo is not None:
            tree = sigmahq_repo
        elif snapshot is not None and snapshot.is_file():
            tree = unpack_snapshot(snapshot, Path(temporary))
        else:
            raise typer.BadParameter(
                "give --sigmahq-repo DIR or --snapshot FILE.tar.gz", param_hint="--sigmahq-repo"
            )
        if not (tree / "rules").is_dir():
            raise typer.BadParameter(f"{tree} has no rules/ folder", param_hint="--sigmahq-repo")
        pack = contrib(inputs, out, tree, author, day)
    summary = pack.summary()
    typer.echo(
        f"{summary['rules']} new rules for {summary['tools']} tools; {summary['covered']} already covered "
        f"({summary['extensions']} extension suggestions); {summary['skipped']} skipped"
    )
    typer.echo(f"pull request text: {out / 'PULL_REQUEST.md'}; details: {out / 'contrib.json'}")


def _verify(out: Path, to_stderr: bool = False) -> bool:
    """Run the proof; True when something diverged or could not be checked. With ``--json`` its
    lines go to stderr: stdout holds the JSON summary only."""
    try:
        from .verify.run import verify_output
    except ImportError as error:
        typer.echo(
            f"error: the proof needs the verify extra: pip install 'rmm2sigma[verify]' ({error})", err=True
        )
        raise typer.Exit(2) from None
    if not (out / "report.json").is_file():
        typer.echo(f"error: {out}: no report.json here; give a folder `rmm2sigma convert` wrote", err=True)
        raise typer.Exit(2)
    return verify_output(out, echo=partial(typer.echo, err=to_stderr))


def main() -> None:
    app()
