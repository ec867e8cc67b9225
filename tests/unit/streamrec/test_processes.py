"""Commands are stopped with everything they started (issue 19: an orphaned
``ray::TrainController`` outlived ``make test``)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from streamrec.infra.processes import run_command, stop_process, streamrec_process
from streamrec.settings import Settings


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by PID 1) counts as gone
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "zombie" not in status.read_text()


def _gone_soon(pid: int) -> bool:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_finished_command_leaves_no_child_behind() -> None:
    code, output = run_command(["bash", "-c", "sleep 300 & echo $!"], timeout=30)
    assert code == 0
    assert _gone_soon(int(output.strip()))


def test_a_failed_command_leaves_no_child_behind() -> None:
    code, output = run_command(["bash", "-c", "sleep 300 & echo $!; exit 3"], timeout=30)
    assert code == 3
    assert _gone_soon(int(output.strip()))


def test_a_timed_out_command_leaves_no_child_behind(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    with pytest.raises(subprocess.TimeoutExpired):
        run_command(["bash", "-c", f"sleep 300 & echo $! > {pid_file}; wait"], timeout=1)
    assert _gone_soon(int(pid_file.read_text()))


def test_stopping_a_process_that_already_exited_stops_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    proc = subprocess.Popen(
        ["bash", "-c", f"sleep 300 & echo $! > {pid_file}"], start_new_session=True
    )
    proc.wait(10)  # the parent is gone, its child lives on in the group
    assert _alive(int(pid_file.read_text()))
    stop_process(proc)
    assert _gone_soon(int(pid_file.read_text()))


def test_free_ports_are_drawn_below_the_ephemeral_range_and_bindable() -> None:
    import socket

    from streamrec.infra.processes import LISTEN_PORTS_LOW, _ephemeral_low, free_port

    ports = {free_port() for _ in range(20)}
    assert all(LISTEN_PORTS_LOW <= port < _ephemeral_low() for port in ports), ports
    assert len(ports) > 1  # drawn, not one fixed port
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # nothing listens there


def test_free_ports_drawn_one_after_another_never_repeat(monkeypatch: pytest.MonkeyPatch) -> None:
    """A service's ports are drawn before it binds any: a draw never hands out a port this
    process handed out before (a broker's listener and controller once got the same one)."""
    import random

    from streamrec.infra import processes

    # every draw offers the same ports in the same order: only the memory tells them apart
    def in_order(self: random.Random, low: int, high: int) -> int:
        offered = getattr(self, "offered", 0)
        self.offered = offered + 1  # type: ignore[attr-defined]
        return low + offered

    monkeypatch.setattr(processes, "_HANDED_OUT", set())
    monkeypatch.setattr(random.Random, "randrange", in_order)
    ports = [processes.free_port() for _ in range(5)]
    assert len(set(ports)) == 5, ports


def test_a_failure_inside_a_command_s_block_prints_the_end_of_its_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A test that fails while a `streamrec` child runs shows what the child said (a worker
    that never committed in CI left nothing to read)."""
    log = tmp_path / "help.log"
    with (
        pytest.raises(RuntimeError, match="the test failed"),
        streamrec_process(Settings(state_dir=tmp_path), "--help", log=log) as proc,
    ):
        assert proc.wait(60) == 0
        raise RuntimeError("the test failed")
    printed = capsys.readouterr().err
    assert f"the end of `streamrec --help`'s output ({log})" in printed
    assert "usage:" in printed and "show this help message" in printed


def test_a_command_s_block_that_succeeds_prints_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with streamrec_process(Settings(state_dir=tmp_path), "--help", log=tmp_path / "l") as proc:
        assert proc.wait(60) == 0
    assert capsys.readouterr().err == ""
