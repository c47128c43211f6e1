"""Command line: ``rmm2sigma convert`` and ``rmm2sigma verify``. Thin: the work is in the library."""

from __future__ import annotations

import datetime as dt
import sys
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


def _targets(values: list[str] | None) -> list[str]:
    chosen = [t.strip() for value in values or [] for t in value.split(",") if t.strip()] or list(TARGETS)
    unknown = [t for t in chosen if t not in TARGETS]
    if unknown:
        raise typer.BadParameter(f"unknown target(s) {', '.join(unknown)}; choose from {', '.join(TARGETS)}")
    return chosen


@app.command()
def convert(
    inputs: Annotated[list[str], typer.Argument(help="Files or folders (recursive); '-' reads stdin.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder.")],
    target: Annotated[
        list[str] | None,
        typer.Option("--target", "-t", help=f"Targets (repeat or comma-separate): {', '.join(TARGETS)}."),
    ] = None,
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

    wanted = _targets(target)
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
        results, report = write_outputs(results, out, wanted, force)
    except OSError as error:  # report.json refused, or the output folder cannot be written
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(summary_table(report))
    typer.echo(f"\nreport: {out / 'report.json'}")
    failed = any(r.status == "failed" for r in results)
    if verify:
        failed = _verify(out) or failed
    raise typer.Exit(1 if failed else 0)


@app.command("verify")
def verify_command(
    out: Annotated[Path, typer.Argument(help="A folder written by `rmm2sigma convert`.")],
) -> None:
    """Prove each rule in OUT by executing original and converted queries over generated events."""
    raise typer.Exit(1 if _verify(out) else 0)


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
    date: Annotated[str | None, typer.Option(help="Sigma `date` (YYYY-MM-DD); default today.")] = None,
) -> None:
    """Write a SigmaHQ pull request: new rules in their layout, PULL_REQUEST.md and contrib.json."""
    import tempfile

    from .contrib import contrib
    from .sigmahq import unpack_snapshot

    try:
        day = dt.date.fromisoformat(date) if date else dt.date.today()
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
