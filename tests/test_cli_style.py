"""One style across commands: --version, switches that read as switches, clean usage errors, shell
completion, range-checked numbers. In-process through testkit.cli.run_cli."""

from __future__ import annotations

import re

import pytest
from prometheus_client import generate_latest

from testkit.cli import run_cli
from worker.cli import app
from worker.observe.metrics import Metrics
from worker.version import package_version

COMMANDS = sorted(c.name or "" for c in app.registered_commands)


def test_version_is_the_installed_distributions() -> None:
    from importlib.metadata import version

    res = run_cli("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"emotion-worker {version('emotion-stream-worker')}"
    assert re.fullmatch(r"emotion-worker \d+\.\d+\.\d+\S*", res.stdout.strip())


def test_build_info_carries_the_same_version() -> None:
    text = generate_latest(Metrics().registry).decode()
    assert f'emotion_worker_build_info{{version="{package_version()}"}} 1.0' in text


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_shows_switches_without_a_value_type(command: str) -> None:
    res = run_cli(*([command] if command else []), "--help")
    assert res.returncode == 0, res.stderr
    assert "<bool>" not in res.stdout, res.stdout
    assert "--help" in res.stdout and "Traceback" not in res.stderr


def test_a_switch_given_a_value_is_a_usage_error() -> None:
    res = run_cli("replay-dead-letters", "--dry-run", "true")
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "unexpected extra argument" in res.stderr and "(true)" in res.stderr
    assert "replay-dead-letters --help" in res.stderr


def test_misspelt_option_and_unknown_command_are_usage_errors() -> None:
    res = run_cli("tail", "--count-to", "3")
    assert res.returncode == 2 and "No such option: --count-to" in res.stderr
    res = run_cli("tial")
    assert res.returncode == 2 and "No such command 'tial'" in res.stderr


def test_shell_completion_is_offered_and_completes() -> None:
    res = run_cli("--help")
    assert "--install-completion" in res.stdout and "--show-completion" in res.stdout
    res = run_cli("--show-completion", "bash")
    assert res.returncode == 0 and "complete -o default -F" in res.stdout, res.stderr
    # what the installed script asks: in-process the program is called "root", hence _ROOT_COMPLETE
    res = run_cli(env={"_ROOT_COMPLETE": "complete_bash", "COMP_WORDS": "root ta", "COMP_CWORD": "1"})
    assert res.stdout.split() == ["tail"]
    res = run_cli(env={"_ROOT_COMPLETE": "complete_bash", "COMP_WORDS": "root tail --dead", "COMP_CWORD": "2"})
    assert res.stdout.split() == ["--dead-letters"]


def test_command_list_gives_each_first_sentence_in_full() -> None:
    res = run_cli("--help")
    commands = res.stdout.split("Commands:")[1]
    assert "..." not in commands
    assert "dead letters, commit." in commands


@pytest.mark.parametrize(("args", "option"), [
    (("produce-samples", "--rate", "-1"), "--rate"),
    (("produce-samples", "--count", "-5"), "--count"),
    (("demo", "--rate", "-2"), "--rate"),
    (("demo", "--seconds", "-1"), "--seconds"),
    (("tail", "--count", "-1"), "--count"),
    (("check", "--timeout", "0"), "--timeout"),
    (("fine-tune", "--data", "d", "--output", "o", "--epochs", "0"), "--epochs"),
    (("train-head", "--embedder", "e", "--data", "d", "--output", "o", "--hidden", "0"), "--hidden"),
])
def test_numbers_out_of_range_are_refused(args: tuple[str, ...], option: str) -> None:
    res = run_cli(*args)
    assert res.returncode == 2, res.stdout
    assert f"Invalid value for '{option}'" in res.stderr and "Traceback" not in res.stderr


def test_usage_errors_are_one_line_pointing_at_the_help() -> None:
    from testkit.cli import run_cli

    cases = {
        ("replay-dead-letters", "--chunk", "0"): "Invalid value for '--chunk'",
        ("--bogus",): "No such option: --bogus",
        ("tial",): "Did you mean 'tail'?",
        ("replay-dead-letters", "--dry-run", "true"): "unexpected extra argument",
    }
    for args, says in cases.items():
        res = run_cli(*args)
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, (args, res.stderr)
        assert lines[0].startswith("error: ") and says in lines[0] and "--help)" in lines[0], lines
    assert run_cli().returncode in (0, 2)  # no arguments: the help, not an error line
