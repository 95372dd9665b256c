"""CLI argument errors exit 1 with a message that names the problem: never 2, which means Denied."""

from __future__ import annotations

from pathlib import Path

import pytest

from greenlight.cli import main


def run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)


@pytest.fixture(autouse=True)
def no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No kubeconfig anywhere: argument errors must be found before any cluster is needed."""
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing-kubeconfig"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["deny", "destroy-prod"], "the following arguments are required: --reason"),
        (["approve"], "the following arguments are required: name"),
        (
            ["request", "--target", "prod", "--workflow-id", "wf"],
            "the following arguments are required: --action",
        ),
        (
            [
                "request",
                "--action",
                "a",
                "--target",
                "t",
                "--workflow-id",
                "w",
                "--approvals",
                "2x",
            ],
            "argument --approvals: invalid int value: '2x'",
        ),
        (["wait", "destroy-prod", "--timeout", "soon"], "invalid float value: 'soon'"),
        (["get", "destroy-prod", "-o", "table"], "invalid choice: 'table'"),
        (["audit"], "the following arguments are required: COMMAND"),
        (["audit", "verify"], "the following arguments are required: file"),
        (["approve", "x", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_arguments_exit_1_and_say_what_is_wrong(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(argv)

    assert code == 1
    assert message in capsys.readouterr().err


def test_no_command_prints_help_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([]) == 1
    assert "request" in capsys.readouterr().out


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["request", "--help"]) == 0
    assert "--workflow-id" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        ("0s", "timeout '0s' must be between 1m and 7d"),
        ("8d", "timeout '8d' must be between 1m and 7d"),
        ("abc", "timeout 'abc' is not a duration like 30m, 2h, 1h30m or 3d"),
        ("", "timeout '' is not a duration"),
    ],
)
def test_bad_request_timeout_is_refused_before_contacting_a_cluster(
    timeout: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["request", "--action", "a", "--target", "t", "--workflow-id", "w", "--timeout"]

    code = run([*argv, timeout])

    assert code == 1
    assert message in capsys.readouterr().err


def test_missing_plan_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["request", "--action", "a", "--target", "t", "--workflow-id", "w"]

    code = run([*argv, "--plan-file", str(tmp_path / "plan.txt")])

    assert code == 1
    assert "plan.txt" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["approve", "x"], ["list"], ["get", "x"], ["wait", "x"]])
def test_no_cluster_configured_is_an_error_not_a_traceback(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(argv)

    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("greenlight: ")
    assert "Traceback" not in err


def test_audit_verify_of_a_missing_file_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(["audit", "verify", str(tmp_path / "audit.jsonl")])

    assert code == 1
    assert "audit.jsonl" in capsys.readouterr().err
