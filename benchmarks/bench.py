"""How fast rmm2sigma is, and where the time goes.

    python benchmarks/bench.py [--quick] [--corpus DIR] [--synthetic N] [--jobs N]

Measures, each conversion in a fresh ``rmm2sigma convert`` process (wall time, and peak RSS from
``getrusage(RUSAGE_CHILDREN)`` in a small wrapper process, so only the converter is counted):

1. the corpus (default ../shared/corpus/azure-sentinel-rmm, else examples/, else generated) to
   Sigma and all five targets, with the default ``--jobs 0`` and with ``--jobs 1``, against
   sigma-cli converting the same Sigma rules to the same five targets with the same pipelines;
2. a synthetic corpus written as Sentinel YAML from the corpus with varied literals: ms per rule
   at N/10 and N rules (linear scaling), peak memory, and ``--jobs 0`` (all cores) vs ``--jobs 1``;
3. ``rmm2sigma --help`` start-up time, and whether pySigma is imported on that path;
4. where converting the corpus in-process spends its time: clocks per stage, cProfile top 15.

Targets (full mode): corpus <= 2 s and faster than sigma-cli; < 500 MB at 10 000 rules; --help
< 0.3 s. ``--quick`` (CI) uses small sizes, checks that every step works and asserts nothing
about times. A broken step exits 1.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import json
import os
import platform
import pstats
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "azure-sentinel-rmm"
EXAMPLES = REPO / "examples"
SIGMA_CLI_TARGETS = (
    ("kusto", ["-t", "kusto", "-p", "microsoft_xdr"]),
    ("splunk", ["-t", "splunk", "-p", "sysmon", "-p", "splunk_windows"]),
    ("lucene", ["-t", "lucene", "-p", "ecs_windows"]),
    ("esql", ["-t", "esql", "-p", "ecs_windows", "--disable-pipeline-check"]),  # as targets.py pairs them
    ("eql", ["-t", "eql", "-p", "ecs_windows"]),
)
TEMPLATE = """\
id: {id}
name: Remote Management and Monitoring tool - Bench{n} - Create Process
description: |
  Generated because no corpus or examples were found: finds the Bench{n} tool starting.
tactics: CommandAndControl
relevantTechniques: T1219
query: |
  DeviceProcessEvents
  | where ProcessVersionInfoCompanyName has 'Bench{n}' and FileName =~ 'bench{n}.exe'
"""
# quoted KQL literals made only of characters that need no escaping in any quoting style
_LITERAL = re.compile(r"""(["'])([A-Za-z0-9 ._-]+)\1""")
# the wrapper process: runs the command, reports its wall time and the peak RSS of its children
_MEASURE = """\
import json, subprocess, sys, time
try:
    import resource
except ImportError:
    resource = None
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
wall = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if resource else -1
if sys.platform == "darwin":
    peak //= 1024
print(json.dumps({"wall": wall, "peak_kb": peak, "rc": done.returncode,
                  "stderr": done.stderr.decode(errors="replace")[-3000:]}))
"""


class BenchError(Exception):
    """A step did not work (not: was slow)."""


@dataclass(frozen=True)
class Run:
    wall: float
    peak_mb: float | None


# ---------------------------------------------------------------- running and measuring


def measure(command: Sequence[str], ok_codes: Sequence[int] = (0,)) -> Run:
    """Run ``command`` in a fresh process; wall seconds and its peak RSS (largest process)."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, *command], stdout=subprocess.PIPE, text=True, check=True
    )
    result = json.loads(done.stdout)
    if result["rc"] not in ok_codes:
        raise BenchError(f"{' '.join(command)} exited {result['rc']}:\n{result['stderr']}")
    return Run(result["wall"], result["peak_kb"] / 1024 if result["peak_kb"] >= 0 else None)


def best_of(repeat: int, make: Callable[[], Run]) -> Run:
    """The fastest of ``repeat`` runs (the least disturbed by the rest of the machine)."""
    return min((make() for _ in range(repeat)), key=lambda run: run.wall)


def executable(name: str) -> str | None:
    """A console script of this interpreter's environment, else one on PATH."""
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def rmm2sigma_command() -> list[str]:
    script = executable("rmm2sigma")
    return [script] if script else [sys.executable, "-c", "from rmm2sigma.cli import main; main()"]


def convert(inputs: Path, out: Path, *extra: str) -> Run:
    """One ``rmm2sigma convert`` into a fresh ``out``; 1 (some inputs failed) is a normal outcome."""
    shutil.rmtree(out, ignore_errors=True)
    run = measure([*rmm2sigma_command(), "convert", str(inputs), "--out", str(out), *extra], ok_codes=(0, 1))
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    if report["summary"]["converted"] == 0:
        raise BenchError(f"nothing converted in {inputs}")
    return run


def summary(out: Path) -> dict[str, int]:
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return {key: report["summary"][key] for key in ("inputs", "converted", "partial", "failed", "rules")}


# ---------------------------------------------------------------- inputs


def corpus_inputs(requested: Path | None, limit: int | None, work: Path) -> tuple[Path, str]:
    """The corpus folder to measure (the first ``limit`` files when given) and what it is."""
    for folder, label in ((requested or DEFAULT_CORPUS, "corpus"), (EXAMPLES, "examples")):
        files = sorted(p for p in folder.glob("*") if p.suffix in (".yaml", ".yml", ".txt", ".kql"))
        if folder.is_dir() and files:
            if limit is None or len(files) <= limit:
                return folder, f"{label} {folder} ({len(files)} files)"
            chosen = work / "corpus"
            chosen.mkdir()
            for path in files[:limit]:
                shutil.copy(path, chosen / path.name)
            return chosen, f"{label} {folder} (first {limit} of {len(files)} files)"
        if requested and folder == requested:
            raise BenchError(f"no query files in {requested}")
    generated = work / "generated"
    generated.mkdir()
    for n in range(limit or 20):
        text = TEMPLATE.format(id=uuid.UUID(int=n, version=4), n=n)
        (generated / f"bench_{n:03d}.yaml").write_text(text, encoding="utf-8")
    return generated, f"generated from the inline template ({limit or 20} files)"


def synthetic(corpus: Path, count: int, out: Path) -> Path:
    """``count`` Sentinel YAML files cycling over the corpus, each with its own id, name and literals."""
    from rmm2sigma.errors import Rmm2SigmaError
    from rmm2sigma.sources import discover, read_source

    sources = []
    for path in discover([str(corpus)]):
        try:
            sources.append(read_source(path))
        except Rmm2SigmaError:
            continue
    if not sources:
        raise BenchError(f"no readable query in {corpus}")
    out.mkdir(parents=True)
    rng = random.Random(20261123)
    for n in range(count):
        source = sources[n % len(sources)]
        kql = _LITERAL.sub(partial(_varied, rng=rng, n=n), source.kql)
        name = f"{source.name or 'Synthetic query'} #{n}"
        lines = [
            f"id: {uuid.UUID(int=rng.getrandbits(128), version=4)}",
            f"name: {json.dumps(name)}",
            f"description: {json.dumps(source.description or 'A synthetic benchmark query.')}",
            f"severity: {source.severity or 'Medium'}",
            f"tactics: {json.dumps(list(source.tactics))}",
            f"relevantTechniques: {json.dumps(list(source.techniques))}",
            "query: |",
            *(f"  {line}" for line in kql.rstrip("\n").split("\n")),
        ]
        (out / f"synthetic_{n:05d}.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _varied(match: re.Match[str], rng: random.Random, n: int) -> str:
    """The literal with a letter and the query's number appended: same shape, other value."""
    quote, value = match[1], match[2]
    return f"{quote}{value}{rng.choice('abcdefgh')}{n}{quote}"


# ---------------------------------------------------------------- steps


def step_corpus(corpus: Path, work: Path, repeat: int) -> tuple[list[str], Path]:
    out = work / "corpus-out"
    serial = best_of(repeat, lambda: convert(corpus, out, "--jobs", "1"))
    run = best_of(repeat, lambda: convert(corpus, out))
    counts = summary(out)
    rows = [
        _row(
            "rmm2sigma convert, Sigma + 5 targets",
            run,
            f"{counts['inputs']} inputs, {counts['rules']} rules, {counts['failed']} failed; --jobs 0",
        ),
        _row("  the same with --jobs 1", serial),
    ]
    sigma = executable("sigma")
    if sigma is None:
        rows.append(f"{'sigma-cli':<40}not installed: comparison skipped")
        return rows, out
    total, peak = 0.0, 0.0
    for target, options in SIGMA_CLI_TARGETS:
        command = [
            sigma,
            "convert",
            "-s",
            *options,
            str(out / "sigma_rules"),
            "-o",
            str(work / f"sigma.{target}"),
        ]
        cli = best_of(repeat, lambda command=command: measure(command))  # type: ignore[misc]
        total += cli.wall
        peak = max(peak, cli.peak_mb or 0.0)
        rows.append(_row(f"  sigma convert -t {target}", cli))
    rows.append(_row("sigma-cli, same rules, 5 targets", Run(total, peak or None)))
    rows.append(f"rmm2sigma is {total / run.wall:.1f}x faster than sigma-cli (which only does the last step)")
    return rows, out


def step_synthetic(corpus: Path, work: Path, count: int, jobs: int) -> list[str]:
    from rmm2sigma.cli import INPUTS_PER_WORKER
    from rmm2sigma.convert import available_cores

    small, large = max(count // 10, 1), count
    folders = {n: synthetic(corpus, n, work / f"synthetic-{n}") for n in (small, large)}
    rows = []
    per_rule = {}
    for n, folder in folders.items():
        run = convert(folder, work / f"synthetic-{n}-out", "--jobs", "1")
        per_rule[n] = run.wall * 1000 / n
        counts = summary(work / f"synthetic-{n}-out")
        rows.append(
            _row(f"{n:>6} rules, --jobs 1", run, f"{per_rule[n]:6.2f} ms/rule, {counts['failed']} failed")
        )
    rows.append(
        f"scaling: ms/rule at {large} / at {small} = {per_rule[large] / per_rule[small]:.2f} (1.00 is linear)"
    )
    parallel = convert(folders[large], work / f"synthetic-{large}-out-parallel", "--jobs", str(jobs))
    cores = jobs or min(available_cores(), large // INPUTS_PER_WORKER)
    ms = parallel.wall * 1000 / large
    rows.append(_row(f"{large:>6} rules, --jobs {jobs} ({cores} workers)", parallel, f"{ms:6.2f} ms/rule"))
    speedup = per_rule[large] * large / 1000 / parallel.wall
    rows.append(f"speed-up --jobs {jobs} vs --jobs 1: {speedup:.2f}x on {cores} cores")
    return rows


def step_help(repeat: int) -> list[str]:
    run = best_of(repeat, lambda: measure([*rmm2sigma_command(), "--help"]))
    code = (
        "import sys\nsys.argv = ['rmm2sigma', '--help']\n"
        "from rmm2sigma.cli import main\ntry: main()\nexcept SystemExit: pass"
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, check=True
    )
    chain = heavy_import_chain(done.stderr, ("sigma", "ruamel", "lark"))
    rows = [_row("rmm2sigma --help", run)]
    for module, path in chain.items():
        rows.append(f"  imports {module:<8} on the --help path: {path or 'no'}")
    return rows


def heavy_import_chain(importtime: str, packages: Sequence[str]) -> dict[str, str | None]:
    """For each package: its import time and the chain of imports that pulled in its heaviest part.

    ``-X importtime`` lists a module when its import ends, after the modules it imported, indented
    one level deeper; so a module's importer is the next line with less indentation.
    """
    entries = []
    for line in importtime.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            entries.append((len(match[2]), match[3], int(match[1])))

    def importers(index: int) -> list[str]:
        depth, chain = entries[index][0], []
        for later_depth, name, _ in entries[index + 1 :]:
            if later_depth < depth:
                chain.append(name)
                depth = later_depth
        return chain

    found: dict[str, str | None] = {}
    for package in packages:
        roots = []  # the package's modules imported from outside it: what it costs us
        for index, (_, name, micros) in enumerate(entries):
            chain = importers(index)
            if name.split(".")[0] == package and chain and chain[0].split(".")[0] != package:
                roots.append((micros, [name, *chain]))
        if roots:
            total = sum(micros for micros, _ in roots) / 1000
            found[package] = f"{total:.0f} ms, e.g. " + " <- ".join(max(roots)[1])
        else:
            found[package] = None
    return found


# (module, attribute) the conversion calls through; each is wrapped with a clock in turn
STAGES = (
    ("read sources", "rmm2sigma.convert", "read_sources"),
    ("parse KQL", "rmm2sigma.kql", "parse"),
    ("lower to the model", "rmm2sigma.convert", "lower"),
    ("map to Sigma fields", "rmm2sigma.convert", "map_detection"),
    ("emit Sigma (rule + YAML text)", "rmm2sigma.convert", "emit"),
    ("  of which YAML text", "rmm2sigma.sigma", "dump_yaml"),
    ("5 targets (pySigma backends)", "rmm2sigma.targets", "convert"),
)


def step_profile(corpus: Path, work: Path) -> list[str]:
    """Where converting the corpus in this process spends its time, after one warm-up conversion.

    Stage times come from clocks around the stage functions (cProfile's own cost is uneven: it
    triples the many small calls of pure-Python code), then cProfile lists the top functions.
    """
    from rmm2sigma.convert import convert_all
    from rmm2sigma.formats import select
    from rmm2sigma.report import write_outputs
    from rmm2sigma.sigma import Options
    from rmm2sigma.sources import discover
    from rmm2sigma.targets import TARGETS

    paths = list(discover([str(corpus)]))
    started = time.perf_counter()
    convert_all(paths[:1], Options(), TARGETS)  # imports, grammar and backends: paid once per process
    rows = [f"one-time set-up (imports, grammar, backends) {time.perf_counter() - started:7.2f} s"]

    clocks = {label: 0.0 for label, _, _ in STAGES}
    originals = []
    for label, module_name, attribute in STAGES:
        module = importlib.import_module(module_name)
        original = getattr(module, attribute, None)
        if original is not None:
            originals.append((module, attribute, original))
            setattr(module, attribute, _clocked(original, clocks, label))
    try:
        started = time.perf_counter()
        results = convert_all(paths, Options(), TARGETS)
        converted = time.perf_counter()
        write_outputs(results, work / "profile-out", deploy=select([], TARGETS))  # as the CLI does
        written = time.perf_counter()
    finally:
        for module, attribute, original in originals:
            setattr(module, attribute, original)
    clocks["write files (+ deployable), reports"] = written - converted
    total = written - started
    rows.append(f"then, for {len(paths)} inputs:")
    for label, seconds in clocks.items():
        rows.append(f"  {label:<36}{seconds:7.2f} s {100 * seconds / total:5.1f} %")
    rows.append(f"  {'total':<36}{total:7.2f} s")
    ranked = sorted((seconds, label) for label, seconds in clocks.items() if not label.startswith(" "))
    (first, first_label), (second, second_label) = ranked[-1], ranked[-2]
    rows.append(
        f"largest: {first_label} ({100 * first / total:.0f} %), "
        f"then {second_label} ({100 * second / total:.0f} %)"
    )

    profiler = cProfile.Profile()
    profiler.enable()
    convert_all(paths, Options(), TARGETS)
    profiler.disable()
    stats = pstats.Stats(profiler)
    rows.append("top 15 by cumulative time (cProfile, which slows small calls the most):")
    for (file, line, function), (_, calls, _, cumulative, _) in sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda item: -item[1][3],
    )[:15]:
        rows.append(f"  {cumulative:7.2f} s {calls:>8}  {_short(file)}:{line}({function})")
    return rows


def _clocked(function: Callable[..., object], clocks: dict[str, float], label: str) -> Callable[..., object]:
    def timed(*args: object, **kwargs: object) -> object:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            clocks[label] += time.perf_counter() - started

    return timed


def _short(path: str) -> str:
    path = path.replace(os.sep, "/")
    for marker in ("/site-packages/", "/src/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def _row(label: str, run: Run, note: str = "") -> str:
    """One aligned line: what, wall time, peak RSS of the largest process, and a note."""
    peak = f"{run.peak_mb:6.0f} MB" if run.peak_mb is not None else "     n/a"
    return f"{label:<40}{run.wall:7.2f} s {peak}   {note}".rstrip()


# ---------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes; check every step works (CI)")
    parser.add_argument("--corpus", type=Path, help=f"query folder (default {DEFAULT_CORPUS})")
    parser.add_argument("--synthetic", type=int, help="synthetic rules (default 10000, quick 200)")
    parser.add_argument("--jobs", type=int, default=0, help="workers for the parallel run (0: all cores)")
    parser.add_argument("--repeat", type=int, help="runs per timing, fastest kept (default 3, quick 1)")
    args = parser.parse_args(argv)
    quick = args.quick
    count = args.synthetic or (200 if quick else 10_000)
    repeat = args.repeat or (1 if quick else 3)
    import yaml

    from rmm2sigma import __name__ as package
    from rmm2sigma.convert import available_cores

    versions = _versions("pysigma", "rmm2sigma", "sigma-cli")
    print(f"# rmm2sigma benchmark{' (quick: sizes too small for the targets)' if quick else ''}")
    print(
        f"python {platform.python_version()} on {platform.system()} {platform.machine()}, "
        f"{available_cores()} cores; "
        f"{versions}; libyaml {'yes' if yaml.__with_libyaml__ else 'no'}; {package} from {REPO}"
    )
    with tempfile.TemporaryDirectory(prefix="rmm2sigma-bench-") as temporary:
        work = Path(temporary)
        corpus, label = corpus_inputs(args.corpus, 20 if quick else None, work)
        print(f"inputs: {label}\n")
        sections: list[tuple[str, Callable[[], list[str]]]] = [
            (
                "corpus to Sigma and five targets (best of {repeat})",
                lambda: step_corpus(corpus, work, repeat)[0],
            ),
            (f"synthetic corpus of {count} rules", lambda: step_synthetic(corpus, work, count, args.jobs)),
            ("start-up", lambda: step_help(5 if not quick else 1)),
            ("where the time goes (in-process)", lambda: step_profile(corpus, work)),
        ]
        for title, step in sections:
            print(f"## {title.format(repeat=repeat)}")
            try:
                rows = step()
            except (BenchError, subprocess.CalledProcessError, OSError, KeyError, ValueError) as error:
                print(f"FAILED: {error}")
                return 1
            print("\n".join(rows), end="\n\n", flush=True)
    return 0


def _versions(*names: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    found = []
    for name in names:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            found.append(f"{name} absent")
    return ", ".join(found)


if __name__ == "__main__":
    sys.exit(main())
