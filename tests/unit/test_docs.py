"""Facts in README.md and docs/ that must stay equal to the code they describe."""

from __future__ import annotations

import re
from pathlib import Path

import click

from topic_sync.cli import cli
from topic_sync.errors import ExitCode
from topic_sync.fcm.error_table import markdown_table

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
DOCS = ROOT / "docs"
OPERATOR_GUIDE = (DOCS / "operator-guide.md").read_text()
GUARANTEES = (DOCS / "guarantees.md").read_text()
ERRORS = (DOCS / "errors.md").read_text()
REFERENCE = (DOCS / "reference.md").read_text()
ARCHITECTURE = (DOCS / "architecture.md").read_text()


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    """Every command below the group, as click finds them (the CLI loads them lazily)."""
    found = []
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None, name
        full = f"{prefix}{name}"
        if isinstance(command, click.Group):
            found += _commands(command, f"{full} ")
        else:
            found.append((full, command))
    return found


def test_error_table_in_the_docs_matches_code() -> None:
    block = re.search(r"<!-- error-table:start -->\n(.*?)\n<!-- error-table:end -->", ERRORS, re.S)
    assert block, "docs/errors.md lacks the error-table markers"
    assert block.group(1).strip() == markdown_table()


def test_every_command_has_help_and_is_in_readme() -> None:
    commands = _commands(cli)
    assert {"run", "db upgrade", "emulator", "demo"} <= {name for name, _ in commands}
    for name, command in commands:
        assert command.help and command.help.strip(), f"{name} has no help text"
        assert f"`topic-sync {name}`" in README, f"README does not mention topic-sync {name}"
        for param in command.params:
            if isinstance(param, click.Option) and not param.hidden:
                assert param.help, f"{name} {param.opts[0]} has no help text"


def test_every_exit_code_is_documented() -> None:
    for code in ExitCode:
        assert re.search(rf"^\| {int(code)} \| ", REFERENCE, re.M), f"exit code {code} undocumented"


def test_ci_runs_the_readme_test_command() -> None:
    section = README.split("## Run the tests", 1)[1]
    command = re.search(r"```sh\n(.*?)\n```", section, re.S).group(1).strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert command in ci
    # What needs programs beyond Python and pip is a step of CI, not a test.
    for step in ("promtool check rules ops/prometheus-alerts.yml", ".ci/check-units"):
        assert step in ci
    # CI installs topic-sync as users do and runs it from that install.
    assert "\n.ci/install-check\n" in ci
    # The heavy tests the command leaves out are a step of CI after it.
    assert ci.index(command) < ci.index("\n.venv/bin/python -m pytest -n auto -m heavy\n")


def test_report_json_contract_in_the_docs_matches_code() -> None:
    from topic_sync.app.report import DEAD_FIELDS, FAILURE_FIELDS, RUN_FIELDS

    for kind, fields in (("failures", FAILURE_FIELDS), ("runs", RUN_FIELDS), ("dead", DEAD_FIELDS)):
        block = re.search(rf'"kind": "{kind}", "{kind}": \[\{{(.*?)\}}\]', OPERATOR_GUIDE, re.S)
        assert block, f"docs/operator-guide.md does not document the {kind} JSON"
        documented = re.findall(r'"(\w+)"', block.group(1))
        assert tuple(documented) == tuple(fields)


def test_every_test_the_guarantees_section_names_exists() -> None:
    section = GUARANTEES.split("## Guarantees", 1)[1].split("\n## ", 1)[0]
    named = 0
    for line in section.splitlines():
        current = None
        for item in re.findall(r"`([^`]+)`", line):
            path, _, name = item.partition("::")
            if path.endswith(".py"):
                current = ROOT / "tests" / path
                assert current.exists(), f"docs/guarantees.md names {path}, which does not exist"
                named += 1
            else:
                name = item
            if name.startswith("test_"):
                assert current is not None, f"docs/guarantees.md names {name} without its file"
                assert f"def {name}(" in current.read_text(), f"{current.name} has no {name}"
                named += 1
    assert named >= 15


def test_project_layout_lists_every_module_and_only_those() -> None:
    block = re.search(r"<!-- layout:start -->\n(.*?)\n<!-- layout:end -->", ARCHITECTURE, re.S)
    assert block, "docs/architecture.md lacks the layout markers"
    listed = set(re.findall(r"^\| `(topic_sync/[\w/]+\.py)` \| \S", block.group(1), re.M))
    modules = {
        str(path.relative_to(ROOT))
        for path in (ROOT / "topic_sync").rglob("*.py")
        if path.name != "__init__.py"
    }
    assert modules - listed == set(), "modules missing from docs/architecture.md"
    assert listed - modules == set(), "docs/architecture.md lists modules that do not exist"


def test_metrics_table_in_the_docs_matches_code() -> None:
    from topic_sync.app.metrics import markdown_table

    block = re.search(r"<!-- metrics:start -->\n(.*?)\n<!-- metrics:end -->", OPERATOR_GUIDE, re.S)
    assert block, "docs/operator-guide.md lacks the metrics markers"
    assert block.group(1).strip() == markdown_table()


def test_monitoring_options_and_ops_files_are_in_the_docs() -> None:
    section = OPERATOR_GUIDE.split("## Metrics and alerts", 1)[1].split("\n## ", 1)[0]
    for needle in (
        "--metrics-file",
        "--pushgateway",
        "--log-format json",
        "ops/prometheus-alerts.yml",
        "ops/grafana-dashboard.json",
    ):
        assert needle in section, (
            f"docs/operator-guide.md's metrics section does not mention {needle}"
        )
    for path in ("ops/prometheus-alerts.yml", "ops/grafana-dashboard.json"):
        assert (ROOT / path).exists(), path


def test_the_configuration_reference_is_what_the_code_generates() -> None:
    """docs/configuration.md is `python -m topic_sync.cli.docs`'s output, to the byte."""
    from topic_sync.cli.docs import configuration_reference

    generated = configuration_reference()
    assert (DOCS / "configuration.md").read_text() == generated, (
        "docs/configuration.md is stale: python -m topic_sync.cli.docs > docs/configuration.md"
    )
    from topic_sync.config.table import SPECS, env_names

    for name in SPECS:  # every setting, with every variable that sets it
        assert f"| `{name}` |" in generated
        if SPECS[name].cli:
            assert all(f"`{env}`" in generated for env in env_names(name))


def test_the_doctor_example_shows_this_releases_schema_head() -> None:
    from topic_sync.store import db

    assert f"migrated to head ({db.head_revision()})" in OPERATOR_GUIDE


def test_the_metrics_textfile_folder_the_guide_names_is_writable_under_the_unit() -> None:
    folder = re.search(r"--metrics-file (/\S+)/[^/\s]+\.prom", OPERATOR_GUIDE).group(1)
    unit = (ROOT / "cron" / "topic-sync.service").read_text()
    assert "ProtectSystem=strict\n" in unit
    assert f"\nReadWritePaths=-{folder}\n" in unit


def _exit_code_names() -> dict[int, str]:
    """The reference's exit-code table: code -> name."""
    rows = re.findall(r"^\| (\d+) \| ([a-z ]+) \| ", REFERENCE, re.M)
    return {int(code): name for code, name in rows}


def test_every_exit_code_is_named_in_the_reference_as_in_the_code() -> None:
    # ExitCode.OK is "done" for people; every other name is the enum's, in words.
    names = {code: code.name.lower().replace("_", " ") for code in ExitCode}
    names[ExitCode.OK] = "done"
    assert _exit_code_names() == {int(code): name for code, name in names.items()}


def test_the_cron_wrapper_describes_every_exit_code_by_its_name() -> None:
    # The shell wrapper cannot import ExitCode: its copy is held to the code here.
    wrapper = (ROOT / "cron" / "topic-sync-cron").read_text()
    described = {
        int(n): text for n, text in re.findall(r'^\s+(\d+)\) echo "([^"]+)"', wrapper, re.M)
    }
    assert sorted(described) == sorted(int(code) for code in ExitCode)
    for code, name in _exit_code_names().items():
        assert described[code].startswith(name), (code, described[code])
    # Its own exits: bad input (an env file it cannot read), or the shell's "not found".
    own = {int(n) for n in re.findall(r"^\s*exit (\d+)$", wrapper, re.M)}
    assert own == {int(ExitCode.BAD_INPUT), 127}


def test_the_front_page_says_how_to_install_and_how_long_the_tests_take() -> None:
    for needle in ("pip install .", "pipx install .", "container image"):
        assert needle in README
    section = README.split("## Run the tests", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"\d+ minutes?.*\d+[- ]cores?", section, re.S), section
    assert "load average" in section
