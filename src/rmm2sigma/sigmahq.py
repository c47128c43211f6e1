"""Run SigmaHQ's own rule checks offline.

This reproduces ``sigma check`` (sigma-cli) with every validator pySigma discovers — all pySigma core
validators plus all validators from ``pySigma-validators-sigmahq`` — except the few that need MITRE
data from the network (:data:`EXCLUDED_VALIDATORS`). What those would have checked on ATT&CK tags is
approximated by :func:`check_attack_tags`.

The SigmaHQ validators read their reference data (log-source taxonomy, file-name prefixes, Windows
EventID/provider tables) through loaders in ``sigma.validators.sigmahq.data`` that download JSON from
GitHub on first use and keep it in a ``diskcache``. :func:`seed_validator_data` points those loaders
at a cache directory of our own and fills it from the copies shipped in ``rmm2sigma/data/sigmahq``,
so no download is ever attempted and results do not depend on whatever a user's default
``~/.cache/pysigma/sigmahq`` holds.

Validators get a rule's ``source`` (its file path): the file-name checks (``sigmahq_filename_*``,
``duplicate_filename``, ``filename_length``) only run on rules loaded from files, which is why
:func:`check_rules` takes paths, not rule objects.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from importlib import import_module, resources
from pathlib import Path
from typing import Any

# Validators that read MITRE data downloaded from GitHub on first use (sigma.data.mitre_attack /
# sigma.data.mitre_d3fend). Offline they would fail, so they are skipped:
#   attacktag  - every attack.* tag must be a known ATT&CK tactic/technique/group/software/...
#   d3_fendtag - every d3fend.* tag must be a known D3FEND tactic/technique/artifact
#   sigmahq_tags_techniques_without_tactics - every technique tag needs the tag of each of the
#                tactics ATT&CK maps it to
# check_attack_tags() checks what can be checked on ATT&CK tags without that data.
EXCLUDED_VALIDATORS: frozenset[str] = frozenset(
    {"attacktag", "d3_fendtag", "sigmahq_tags_techniques_without_tactics"}
)

#: Identifier of the tag check done here in place of the excluded ATT&CK validators.
ATTACK_TAG_CHECK = "rmm2sigma_attack_tags"

#: Identifier for files or rules that cannot be parsed (YAML, Sigma or condition errors).
PARSE_ERROR = "parse"

# ATT&CK Enterprise tactics as SigmaHQ writes them in tags (the tactic's x_mitre_shortname).
# "stealth" and "defense-impairment" are the two tactics ATT&CK v19 split Defense Evasion into;
# "defense-evasion" stays accepted for rules written against earlier releases.
ATTACK_TACTICS: frozenset[str] = frozenset(
    {
        "reconnaissance",
        "resource-development",
        "initial-access",
        "execution",
        "persistence",
        "privilege-escalation",
        "stealth",
        "defense-impairment",
        "defense-evasion",
        "credential-access",
        "discovery",
        "lateral-movement",
        "collection",
        "command-and-control",
        "exfiltration",
        "impact",
    }
)

_TECHNIQUE = re.compile(r"t\d{4}(?:\.\d{3})?")
# Anything that starts like a technique id (t + digit) is meant as one and must be well-formed.
_TECHNIQUE_LIKE = re.compile(r"t\d")
# Groups (G0001) and software (S0001) are the other ATT&CK ids SigmaHQ rules use as tags.
_GROUP_OR_SOFTWARE = re.compile(r"[gs]\d{4}")

# Packaged data file per loader module of sigma.validators.sigmahq.data.
_DATA_FILES: dict[str, str] = {
    "data_filename": "sigmahq_filename.json",
    "data_taxonomy": "sigmahq_taxonomy.json",
    "data_windows_eventid": "sigmahq_windows_eventid.json",
    "data_windows_provider": "sigmahq_windows_provider.json",
}


@dataclass(frozen=True)
class RuleIssue:
    """One finding on one rule file: which validator raised it, how bad, and what it says."""

    path: str
    validator: str
    severity: str
    description: str

    def __str__(self) -> str:
        return f"{self.path}: [{self.validator}/{self.severity}] {self.description}"


def default_cache_dir() -> Path:
    """Cache directory used for the seeded SigmaHQ data (not pySigma's own ``~/.cache/pysigma``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rmm2sigma" / "sigmahq"


def seed_validator_data(cache_dir: Path | None = None) -> None:
    """Make the SigmaHQ validators use the packaged data, without network access.

    Every loader is switched to *cache_dir* (default :func:`default_cache_dir`) and the entry it
    reads is written there, parsed by the loader's own ``_parse`` from the packaged JSON (only when it
    differs, so calling it again changes nothing: it is idempotent). The loaders are
    module-level singletons, so this affects every SigmaHQ validator in the process.
    """
    target = cache_dir if cache_dir is not None else default_cache_dir()
    data = resources.files("rmm2sigma") / "data" / "sigmahq"
    for module_name, file_name in _DATA_FILES.items():
        module = import_module(f"sigma.validators.sigmahq.data.{module_name}")
        # The module exposes only bound methods of its loader; all of them share that instance.
        loader: Any = module.set_cache_dir.__self__
        loader.set_cache_dir(str(target))
        parsed = loader._parse(json.loads((data / file_name).read_text(encoding="utf-8")))
        # Same key as SigmahqDataLoader._load_cached() looks up.
        key = f"{loader._cache_prefix}_{loader._custom_url or 'default'}"
        cache = loader._get_cache()
        if cache.get(key) != parsed:
            cache.set(key, parsed)


def active_validators() -> dict[str, type[Any]]:
    """All installed pySigma validators (as sigma-cli discovers them) minus the excluded ones."""
    from sigma.plugins import InstalledSigmaPlugins

    discovered: dict[str, Any] = InstalledSigmaPlugins.autodiscover(
        include_backends=False, include_pipelines=False
    ).validators
    return {name: cls for name, cls in sorted(discovered.items()) if name.lower() not in EXCLUDED_VALIDATORS}


def check_attack_tags(tags: Iterable[str]) -> list[str]:
    """Problems with ``attack.*`` tags, found without ATT&CK data.

    Technique tags must be ``attack.tNNNN`` or ``attack.tNNNN.NNN``; any other ``attack.*`` tag must
    be a tactic from :data:`ATTACK_TACTICS` or a group/software id (``gNNNN``/``sNNNN``). A technique
    without any tactic tag always fails SigmaHQ's techniques-without-tactics check (every technique
    belongs to at least one tactic), so that is reported too.
    """
    problems: list[str] = []
    techniques: list[str] = []
    tactics: list[str] = []
    for tag in tags:
        namespace, _, name = tag.partition(".")
        if namespace != "attack":
            continue
        if _TECHNIQUE_LIKE.match(name):
            if _TECHNIQUE.fullmatch(name):
                techniques.append(tag)
            else:
                problems.append(f"malformed ATT&CK technique tag '{tag}' (expected attack.tNNNN[.NNN])")
        elif name in ATTACK_TACTICS:
            tactics.append(tag)
        elif not _GROUP_OR_SOFTWARE.fullmatch(name):
            problems.append(
                f"'{tag}' is not an ATT&CK tactic (expected one of {', '.join(sorted(ATTACK_TACTICS))})"
            )
    if techniques and not tactics:
        problems.append(f"technique tag(s) {', '.join(techniques)} without any ATT&CK tactic tag")
    return problems


def _rule_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(path.rglob("*.yml"))
        else:
            yield path


def _where(rule: Any) -> str:
    if rule.source is not None:
        return str(rule.source.path)
    return str(rule.id or rule.title)


def _render(value: Any) -> str:
    """Issue field values; a log source is shown by its parts instead of its long dataclass repr."""
    if all(hasattr(value, part) for part in ("product", "category", "service")):
        parts = {part: getattr(value, part) for part in ("product", "category", "service")}
        return "/".join(f"{part}:{name}" for part, name in parts.items() if name)
    return str(value)


def _issue_description(issue: Any) -> str:
    """The issue's description followed by its extra fields, as ``sigma check`` prints them."""
    extra = [
        f"{f.name}={_render(getattr(issue, f.name))}"
        for f in fields(issue)
        if f.name not in ("rules", "severity", "description")
    ]
    return f"{issue.description} ({', '.join(extra)})" if extra else str(issue.description)


def _to_rule_issues(validator: str, issue: Any) -> list[RuleIssue]:
    severity = issue.severity.name.lower()
    description = _issue_description(issue)
    return [RuleIssue(_where(rule), validator, severity, description) for rule in issue.rules]


def check_rules(paths: Iterable[Path]) -> list[RuleIssue]:
    """Check every ``.yml`` file in *paths* (files, or directories searched recursively).

    Runs every validator of :func:`active_validators` over the whole set, exactly like ``sigma
    check`` does (validators keep state across rules, so uniqueness checks such as
    ``identifier_uniqueness`` or ``duplicate_title`` see all rules), plus :func:`check_attack_tags`.
    Files or rules that cannot be parsed are reported with validator ``parse`` and not validated.
    """
    from sigma.collection import SigmaCollection
    from sigma.exceptions import SigmaError
    from sigma.rule import SigmaRule

    seed_validator_data()
    issues: list[RuleIssue] = []
    collections = []
    for file in _rule_files(paths):
        try:
            collection = SigmaCollection.load_ruleset([file], collect_errors=True, resolve_references=False)
        except Exception as error:  # YAML syntax, undecodable bytes, not a mapping, ...
            issues.append(RuleIssue(str(file), PARSE_ERROR, "high", f"{type(error).__name__}: {error}"))
            continue
        # A collection's errors include those of its rules.
        issues.extend(
            RuleIssue(str(file), PARSE_ERROR, "high", f"{type(error).__name__}: {error}")
            for error in collection.errors
        )
        collections.append(collection)

    merged = SigmaCollection.merge(collections, resolve_references=False)
    try:
        merged.resolve_rule_references()
    except SigmaError as error:  # correlation rule referring to an unknown rule
        issues.append(RuleIssue("<collection>", PARSE_ERROR, "high", f"{type(error).__name__}: {error}"))
        return issues

    rules = []
    for rule in merged.rules:
        if rule.errors:
            continue  # already reported through the collection's errors
        if isinstance(rule, SigmaRule):
            try:  # sigma check parses the conditions before validating, so do we
                for condition in rule.detection.parsed_condition:
                    condition.parse()
            except SigmaError as error:
                issues.append(
                    RuleIssue(
                        _where(rule), PARSE_ERROR, "high", f"condition: {type(error).__name__}: {error}"
                    )
                )
                continue
        rules.append(rule)

    validators = {name: cls() for name, cls in active_validators().items()}
    for rule in rules:
        for name, validator in validators.items():
            for issue in validator.validate(rule):
                issues.extend(_to_rule_issues(name, issue))
        for problem in check_attack_tags(str(tag) for tag in rule.tags or []):
            issues.append(RuleIssue(_where(rule), ATTACK_TAG_CHECK, "medium", problem))
    for name, validator in validators.items():
        for issue in validator.finalize():
            issues.extend(_to_rule_issues(name, issue))
    return issues


# ---------------------------------------------------------------- SigmaHQ's pull-request CI

#: The five checks a SigmaHQ pull request must pass (.github/workflows/sigma-test.yml and
#: sigma-validation.yml), by the names findings carry.
CI_CHECKS = ("yamllint", "test_rules", "test_logsource", "sigma_check", "duplicate_id", "json_schema")
_RULE_FOLDERS = (
    "rules",
    "rules-compliance",
    "rules-dfir",
    "rules-emerging-threats",
    "rules-placeholder",
    "rules-threat-hunting",
)
_ID_FOLDERS = (*_RULE_FOLDERS, "deprecated", "unsupported")
_FAILED_TEST = re.compile(r"^(?:FAIL|ERROR): (test_\w+)", re.MULTILINE)


@dataclass(frozen=True)
class CiFinding:
    """One finding of SigmaHQ's CI about one of our files (``path`` relative to their tree)."""

    check: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: [{self.check}] {self.message}"


def placement(sigma_rules: Path) -> dict[str, Path]:
    """Where a pull request puts rmm2sigma's ``sigma_rules/<category>/x.yml``: SigmaHQ's
    ``rules/windows/<category>/x.yml``; a pack already in SigmaHQ's layout (``rules*/``) stays."""
    placed: dict[str, Path] = {}
    for file in sorted(sigma_rules.rglob("*.yml")):
        relative = file.relative_to(sigma_rules)
        if relative.parts[0].startswith("rules"):
            placed[relative.as_posix()] = file
        else:
            placed[f"rules/windows/{relative.as_posix()}"] = file
    return placed


def unpack_snapshot(tarball: Path, into: Path) -> Path:
    """Extract SigmaHQ's snapshot (it unpacks into ``sigma/``) and return the tree's root."""
    import tarfile

    with tarfile.open(tarball) as archive:
        archive.extractall(into, filter="data")
    return into / "sigma"


def run_sigmahq_ci(ours: dict[str, Path], tree: Path, schema: Path, workdir: Path) -> list[CiFinding]:
    """SigmaHQ's pull-request checks on ``ours`` (destination in their tree -> file), placed into
    their unpacked ``tree``; returns the findings about our files only, never upstream's own.

    yamllint, the JSON schema and the duplicate-id check run as the workflows do. Their two
    unittest scripts and ``sigma check`` run on a scoped copy of the tree: our files plus every
    upstream rule that could clash with one (same log source, detection size and condition for
    ``test_duplicate_detections``; same id, title or file name for the uniqueness validators),
    because the full scripts take minutes. A rule outside that scope cannot produce a finding
    about ours, so nothing is hidden.
    """
    import shutil

    placed = [tree / destination for destination in ours if not (tree / destination).exists()]
    try:
        for destination, source in ours.items():
            (tree / destination).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, tree / destination)
        findings = _yamllint(tree, ours)
        findings += _json_schema(tree, ours, schema)
        findings += _duplicate_ids(tree, ours)
        scoped = _scoped_tree(tree, ours, workdir / "scoped")
        findings += _unittest_script(scoped, ours, "test_rules")
        findings += _unittest_script(scoped, ours, "test_logsource")
        findings += _sigma_check(scoped, ours, workdir)
    finally:  # the tree is upstream's again, ready for the next pack
        for path in placed:
            path.unlink(missing_ok=True)
    return findings


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` (one document, or an error), with libyaml's parser when PyYAML is built
    with it: ~10x faster for the data files read at every start."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def safe_documents(text: str, loader_class: Any = None) -> list[Any]:
    """Every YAML document of ``text``, read with a safe loader (libyaml's when built with it)."""
    import yaml

    loader = (loader_class or getattr(yaml, "CSafeLoader", yaml.SafeLoader))(text)
    try:
        documents = []
        while loader.check_data():
            documents.append(loader.get_data())
        return documents
    finally:
        loader.dispose()


def _yamllint(tree: Path, ours: dict[str, Path]) -> list[CiFinding]:
    from yamllint import linter
    from yamllint.config import YamlLintConfig

    config = YamlLintConfig(file=str(tree / ".yamllint"))
    return [
        CiFinding("yamllint", name, f"{problem.line}:{problem.column} {problem.level} {problem.message}")
        for name in ours
        for problem in linter.run((tree / name).read_text(encoding="utf-8"), config, name)
    ]  # strict mode: warnings fail as errors do


def _json_schema(tree: Path, ours: dict[str, Path], schema_file: Path) -> list[CiFinding]:
    import jsonschema
    import yaml

    class _Loader(yaml.SafeLoader):
        """Dates stay text, as they are in the JSON the validator action checks."""

    _Loader.yaml_implicit_resolvers = {
        key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
        for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    schema = json.loads(schema_file.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    findings = []
    for name in ours:
        (document,) = safe_documents((tree / name).read_text(encoding="utf-8"), _Loader)
        for error in validator.iter_errors(document):
            where = "/".join(str(part) for part in error.absolute_path) or "(rule)"
            findings.append(CiFinding("json_schema", name, f"{where}: {error.message}"))
    return findings


def _ids(tree: Path) -> dict[str, list[str]]:
    """``grep -rh "^id: " rules* deprecated unsupported``, keeping which file each id is in."""
    found: dict[str, list[str]] = {}
    for folder in _ID_FOLDERS:
        for file in sorted((tree / folder).rglob("*")):
            if file.is_file():
                text = file.read_text(encoding="utf-8", errors="replace")
                for match in re.finditer(r"^id: (.*)$", text, re.MULTILINE):
                    found.setdefault(match.group(1).strip(), []).append(file.relative_to(tree).as_posix())
    return found


def _duplicate_ids(tree: Path, ours: dict[str, Path]) -> list[CiFinding]:
    return [
        CiFinding("duplicate_id", name, f"id {rule_id} is also in {', '.join(p for p in files if p != name)}")
        for rule_id, files in _ids(tree).items()
        if len(files) > 1
        for name in dict.fromkeys(files)
        if name in ours
    ]


def _clash_key(document: Any) -> str | None:
    """What two rules must share to be duplicates in ``test_duplicate_detections``: the log source
    (less ``definition``), the detection's entry names (``timeframe`` is not compared, but is
    counted) and the condition."""
    if not isinstance(document, dict) or not isinstance(document.get("detection"), dict):
        return None
    logsource = {k: v for k, v in (document.get("logsource") or {}).items() if k != "definition"}
    detection = document["detection"]
    names = sorted(str(name) for name in detection if name != "timeframe")
    return json.dumps(
        [logsource, len(detection), names, detection.get("condition")], sort_keys=True, default=str
    )


def _scoped_tree(tree: Path, ours: dict[str, Path], scoped: Path) -> Path:
    """Our files, every upstream rule that could clash with one, SigmaHQ's ``tests/`` and config."""
    import shutil

    import yaml

    keys, titles, names, ids = set(), set(), set(), set()
    for name in ours:
        (document,) = safe_documents((tree / name).read_text(encoding="utf-8"))
        keys.add(_clash_key(document))
        titles.add(str(document.get("title")))
        ids.add(str(document.get("id")))
        names.add(Path(name).name)
    keep = set(ours)
    for folder in _RULE_FOLDERS:
        for file in (tree / folder).rglob("*.yml"):
            relative = file.relative_to(tree).as_posix()
            if relative in keep:
                continue
            if file.name in names:
                keep.add(relative)
                continue
            text = file.read_text(encoding="utf-8", errors="replace")
            try:
                documents = safe_documents(text)
            except yaml.YAMLError:
                keep.add(relative)  # cannot tell: let their scripts see it
                continue
            first = documents[0] if documents else None
            if (len(documents) == 1 and _clash_key(first) in keys) or (
                isinstance(first, dict) and (str(first.get("title")) in titles or str(first.get("id")) in ids)
            ):
                keep.add(relative)
    shutil.rmtree(scoped, ignore_errors=True)
    shutil.copytree(tree / "tests", scoped / "tests")
    shutil.copyfile(tree / ".yamllint", scoped / ".yamllint")
    for relative in sorted(keep):
        (scoped / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tree / relative, scoped / relative)
    return scoped


def _unittest_script(scoped: Path, ours: dict[str, Path], script: str) -> list[CiFinding]:
    """``python tests/<script>.py`` from the tree's root, as the workflow runs it; a failed test is
    a finding about each of our files its output names (or about all of ours when it names none of
    them but passes without them)."""
    import subprocess
    import sys

    def run(root: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, f"tests/{script}.py"], cwd=root, capture_output=True, text=True, check=False
        )

    result = run(scoped)
    if result.returncode == 0:
        return []
    output = result.stdout + result.stderr
    failed = set(_FAILED_TEST.findall(output))
    named = [name for name in ours if Path(name).name in output]
    if named:
        return [CiFinding(script, name, _lines_about(output, Path(name).name)) for name in named]
    import shutil

    baseline = scoped.with_name(scoped.name + "_upstream")
    shutil.rmtree(baseline, ignore_errors=True)
    shutil.copytree(scoped, baseline)
    for name in ours:
        (baseline / name).unlink()
    upstream = run(baseline)
    ours_only = failed - set(_FAILED_TEST.findall(upstream.stdout + upstream.stderr))
    return [CiFinding(script, name, f"{', '.join(sorted(ours_only))} failed") for name in ours if ours_only]


def _lines_about(output: str, name: str) -> str:
    lines = [" ".join(line.split()) for line in output.splitlines() if name in line]
    return " | ".join(dict.fromkeys(lines))[:2000]


def _sigma_check(scoped: Path, ours: dict[str, Path], workdir: Path) -> list[CiFinding]:
    """``sigma check --fail-on-error --fail-on-issues --validation-config tests/sigma_cli_conf.yml
    rules*`` (sigma-cli, in this process so the seeded validator data is used), with
    :data:`EXCLUDED_VALIDATORS` added to the configuration's exclusions; per-rule results come
    from its JUnit report."""
    import xml.etree.ElementTree as ElementTree

    import yaml
    from sigma.cli.check import check

    seed_validator_data()
    config = yaml.safe_load((scoped / "tests" / "sigma_cli_conf.yml").read_text(encoding="utf-8"))
    config["validators"] = [
        *config.get("validators", ["all"]),
        *(f"-{v}" for v in sorted(EXCLUDED_VALIDATORS)),
    ]
    config_file = workdir / "sigma_cli_conf_offline.yml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    junit = workdir / "sigma_check.xml"
    folders = [str(scoped / folder) for folder in _RULE_FOLDERS if (scoped / folder).is_dir()]
    arguments = ["--fail-on-error", "--fail-on-issues", "--validation-config", str(config_file)]
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        check.main([*arguments, "--junitxml", str(junit), *folders], standalone_mode=False)
    findings: list[CiFinding] = []
    by_path = {str(scoped / name): name for name in ours}
    for case in ElementTree.parse(junit).getroot().iter("testcase"):
        problem = case.find("failure")
        if problem is None:
            problem = case.find("error")
        if problem is None:
            continue
        path = case.get("file") or ""
        message = f"{problem.get('message')}: {' '.join((problem.text or '').split())}"
        findings.extend(
            CiFinding("sigma_check", name, message) for full, name in by_path.items() if full in path
        )
    return findings
