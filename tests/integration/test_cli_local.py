"""upload, status, worker and local, driven as a person would, against a moto server."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from core.cli import cli
from core.cli.validate import validate_json
from core.local.emulator import answers, free_port
from core.local.local_state import ENV_STATE_DIR
from core.local.worker import Worker
from core.validation.engine import validate

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def env_stack(stack, monkeypatch, tmp_path: Path) -> Iterator[Any]:
    """The stack named by environment variables (no local state), with a worker running."""
    monkeypatch.setenv(ENV_STATE_DIR, str(tmp_path / "state"))
    for name, value in stack.settings.to_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL", stack.endpoint)
    worker = Worker(stack.clients, stack.settings, notify_window_s=0.2, wait_time_s=1)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    yield stack
    stop.set()
    thread.join(10)


def _json_lines(output: str) -> list[dict[str, Any]]:
    """The command's JSON lines (the in-process worker's handler logs share stdout here)."""
    objects = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return [o for o in objects if "level" not in o and "_aws" not in o]


def test_upload_wait_json_reports_what_validate_reports(env_stack, fixtures_dir: Path) -> None:
    paths = [fixtures_dir / "test_data1.csv", fixtures_dir / "test_data2.csv"]
    result = CliRunner().invoke(cli, ["upload", *map(str, paths), "--wait", "--json"])

    assert result.exit_code == 1, result.output  # rows were rejected: like validate, exit 1
    lines = _json_lines(result.stdout)
    assert [line["key"] for line in lines] == ["incoming/test_data1.csv", "incoming/test_data2.csv"]
    for path, line in zip(paths, lines, strict=True):
        expected = validate_json(validate(path, path.name))
        assert line["status"] == line["outcome"] == expected["outcome"] == "PARTIAL"
        for field in ("rows", "valid", "invalid", "reasons"):
            assert line[field] == expected[field], field
        assert line["seconds"] > 0


def test_status_lists_the_ledger_newest_first_with_attempts(env_stack, fixtures_dir) -> None:
    runner = CliRunner()
    for name in ("test_data1.csv", "test_data2.csv"):
        upload = runner.invoke(cli, ["upload", str(fixtures_dir / name), "--wait", "--json"])
        assert _json_lines(upload.stdout)[0]["status"] == "PARTIAL"

    everything = runner.invoke(cli, ["status", "--json"])
    one = runner.invoke(cli, ["status", "test_data1.csv", "--json"])
    table = runner.invoke(cli, ["status"])

    assert everything.exit_code == 0, everything.output
    rows = _json_lines(everything.stdout)
    assert [r["key"] for r in rows] == ["incoming/test_data2.csv", "incoming/test_data1.csv"]
    assert all(r["attempts"] == 1 for r in rows)
    assert all(r["processing_seconds"] is not None for r in rows)
    assert [(r["key"], r["valid"]) for r in _json_lines(one.stdout)] == [
        ("incoming/test_data1.csv", 7)
    ]
    assert "incoming/test_data1.csv" in table.stdout
    assert "PARTIAL" in table.stdout  # a pipe gets the ledger's codes, tab-separated
    assert not table.stdout.startswith("\n")

    # A key the ledger does not hold, and a status no file is in, say so: not "no files yet".
    missing = runner.invoke(cli, ["status", "nonexistent.csv"])
    assert missing.exit_code == 1
    assert missing.output == "Error: incoming/nonexistent.csv: not in the ledger (environment)\n"
    failed = runner.invoke(cli, ["status", "--status", "failed"])
    assert failed.exit_code == 0
    assert failed.output == "no failed files (FAILED) in the ledger\n"


def test_status_and_upload_json_agree_on_the_version(env_stack, fixtures_dir) -> None:
    runner = CliRunner()
    upload = runner.invoke(cli, ["upload", str(fixtures_dir / "test_data1.csv"), "--json"])
    uploaded = _json_lines(upload.stdout)[0]
    runner.invoke(cli, ["upload", str(fixtures_dir / "test_data1.csv"), "--wait", "--json"])
    status = runner.invoke(cli, ["status", "test_data1.csv", "--json"])
    entries = _json_lines(status.stdout)
    assert entries, status.output
    for entry in entries:
        # Both name the S3 version id or nothing, never "etag:…", and both give the ETag.
        assert entry["version"] in (None, uploaded["version"])
        assert entry["etag"] == uploaded["etag"]


def test_upload_without_wait_prints_the_stored_version(env_stack, fixtures_dir) -> None:
    result = CliRunner().invoke(cli, ["upload", str(fixtures_dir / "test_data1.csv"), "--json"])
    assert result.exit_code == 0, result.output
    line = _json_lines(result.stdout)[0]
    assert line["status"] == "UPLOADED"
    assert line["key"] == "incoming/test_data1.csv"
    head = env_stack.clients.s3.head_object(Bucket=env_stack.names.bucket, Key=line["key"])
    assert head["VersionId"] == line["version"]


def test_upload_to_a_missing_bucket_is_one_line(env_stack, fixtures_dir, monkeypatch) -> None:
    monkeypatch.setenv("ORDERPIPE_BUCKET", "orderpipe-nowhere")
    result = CliRunner().invoke(cli, ["upload", str(fixtures_dir / "test_data1.csv")])
    assert result.exit_code == 1
    assert "NoSuchBucket" in result.output
    assert "Traceback" not in result.output


def test_without_a_stack_commands_say_how_to_get_one(monkeypatch, tmp_path, fixtures_dir) -> None:
    monkeypatch.setenv(ENV_STATE_DIR, str(tmp_path))
    monkeypatch.delenv("ORDERPIPE_BUCKET", raising=False)
    for args in (["upload", str(fixtures_dir / "test_data1.csv")], ["status"], ["worker"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 1, args
        assert "no stack found: start one with `orderpipe local`" in result.output


def test_upload_of_a_missing_file_is_a_usage_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv(ENV_STATE_DIR, str(tmp_path))
    result = CliRunner().invoke(cli, ["upload", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_worker_until_idle_processes_and_exits(stack, monkeypatch, tmp_path, fixtures_dir):
    monkeypatch.setenv(ENV_STATE_DIR, str(tmp_path))
    monkeypatch.setenv("AWS_ENDPOINT_URL", stack.endpoint)  # restored after: the worker sets it
    for name, value in stack.settings.to_env().items():
        monkeypatch.setenv(name, value)
    stack.clients.s3.put_object(
        Bucket=stack.names.bucket,
        Key="incoming/seed.csv",
        Body=(fixtures_dir / "test_data1.csv").read_bytes(),
    )
    result = CliRunner().invoke(
        cli, ["worker", "--endpoint-url", stack.endpoint, "--until-idle", "30"]
    )
    assert result.exit_code == 0, result.output
    assert "failed" in result.output
    items = stack.clients.dynamodb.scan(TableName=stack.names.orders_table, Select="COUNT")
    assert items["Count"] == 7


# ---- orderpipe local, as a real child process ------------------------------------------------


class LocalProcess:
    """``orderpipe local`` in the background; its output lines are collected as they come."""

    def __init__(self, state: Path, *args: str) -> None:
        env = dict(os.environ, **{ENV_STATE_DIR: str(state), "PYTHONUNBUFFERED": "1"})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "core.cli", "local", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout_s: float = 90) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r}; saw: {self.seen}")

    def value(self, prefix: str) -> str:
        return next(line for line in self.seen if line.startswith(prefix))[len(prefix) :].strip()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(30)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
    except OSError:
        return False


@pytest.mark.slow
def test_local_runs_the_pipeline_survives_a_dead_worker_and_stops_clean(
    tmp_path, monkeypatch, fixtures_dir
) -> None:
    state = tmp_path / "state"
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)  # else it would name another endpoint
    local = LocalProcess(state)
    try:
        local.wait_for("ready")
        endpoint = local.value("AWS_ENDPOINT_URL=")
        worker_pid = int(local.value("worker:").split()[1].rstrip(","))
        assert endpoint.startswith("http://127.0.0.1:")
        assert (state / "local.json").exists()

        # Other commands find the running stack without flags.
        monkeypatch.setenv(ENV_STATE_DIR, str(state))
        runner = CliRunner()
        first = runner.invoke(
            cli, ["upload", str(fixtures_dir / "test_data1.csv"), "--wait", "--json"]
        )
        assert [line["valid"] for line in _json_lines(first.stdout)] == [7], first.output

        # A second `local` against the same state refuses, in one line.
        again = subprocess.run(
            [sys.executable, "-m", "core.cli", "local"],
            check=False,
            cwd=ROOT,
            env=dict(os.environ, **{ENV_STATE_DIR: str(state)}),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 1
        assert "already running" in again.stderr

        # Kill the worker: local restarts it and nothing is lost.
        os.kill(worker_pid, signal.SIGKILL)
        restarted = local.wait_for("worker restarted")
        new_pid = int(restarted.split("pid ")[1].rstrip(")"))
        assert new_pid != worker_pid
        second = runner.invoke(
            cli, ["upload", str(fixtures_dir / "test_data2.csv"), "--wait", "--json"]
        )
        assert [line["valid"] for line in _json_lines(second.stdout)] == [4], second.output
        # The email follows the ledger outcome asynchronously (notify's batching window, and a
        # notice the killed worker held comes back after its visibility timeout).
        deadline = time.monotonic() + 45
        while not list((state / "outbox").glob("*.eml")) and time.monotonic() < deadline:
            time.sleep(0.5)
    finally:
        code = local.stop()

    assert code == 0
    assert not (state / "local.json").exists()
    assert not answers(endpoint)
    assert not _alive(new_pid)
    outbox = state / "outbox"
    assert list(outbox.glob("*.eml")), "rejected rows were emailed into the outbox"


@pytest.mark.slow
def test_local_stops_everything_and_fails_when_the_emulator_dies(tmp_path, monkeypatch) -> None:
    state = tmp_path / "state"
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    local = LocalProcess(state)
    try:
        local.wait_for("ready")
        worker_pid = int(local.value("worker:").split()[1].rstrip(","))
        emulator_pid = int(local.value("emulator:").split()[1].rstrip(","))
        os.kill(emulator_pid, signal.SIGKILL)
        local.wait_for("the emulator exited")
        code = local.proc.wait(60)
    finally:
        local.stop()
    assert code == 1
    assert not (state / "local.json").exists()
    assert not _alive(worker_pid)


@pytest.mark.slow
def test_sigkill_of_local_leaves_no_worker_or_emulator_behind(tmp_path, monkeypatch) -> None:
    state = tmp_path / "state"
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    local = LocalProcess(state)
    try:
        local.wait_for("ready")
        children = [
            int(local.value(prefix).split()[1].rstrip(",")) for prefix in ("worker:", "emulator:")
        ]
        local.proc.kill()  # SIGKILL: no handler of its own runs, its pipes just close
        local.proc.wait(10)
        deadline = time.monotonic() + 8
        while any(map(_alive, children)) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        local.stop()
    assert [pid for pid in children if _alive(pid)] == []


def test_local_on_a_taken_port_fails_in_one_line(tmp_path) -> None:
    import socket

    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        done = subprocess.run(
            [sys.executable, "-m", "core.cli", "local", "--port", str(port)],
            check=False,
            cwd=ROOT,
            env=dict(os.environ, **{ENV_STATE_DIR: str(tmp_path)}),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr.strip() == f"Error: port {port} on 127.0.0.1 is already in use"
    assert not (tmp_path / "local.json").exists()
