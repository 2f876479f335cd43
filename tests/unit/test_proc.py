from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import pytest

from launchers import _proc


def test_reason_prefers_the_last_error_line(tmp_path: Path) -> None:
    log = tmp_path / "vllm.log"
    log.write_text(
        "INFO starting\nTraceback (most recent call last):\n  File x\n"
        "ValueError: max_model_len (999999) is greater than the derived max_model_len\n"
        "INFO shutting down\n\n"
    )
    assert _proc.reason(str(log)).startswith("ValueError: max_model_len (999999)")
    quiet = tmp_path / "quiet.log"
    quiet.write_text("one\ntwo\n")
    assert _proc.reason(str(quiet)) == "two"
    assert _proc.reason(str(tmp_path / "missing.log")) == "no output"


def test_reason_keeps_the_cause_of_a_pydantic_validation_error(tmp_path: Path) -> None:
    # vLLM's config errors name only the model on the exception line; the cause follows.
    log = tmp_path / "vllm.log"
    log.write_text(
        "Traceback (most recent call last):\n"
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\n"
        "  Value error, User-specified max_model_len (999999) is greater than the derived"
        " max_model_len [type=value_error, input_value=ArgsKwargs(()), input_type=ArgsKwargs]\n"
        "    For further information visit https://errors.pydantic.dev/2.14/v/value_error\n"
    )
    assert _proc.reason(str(log)) == (
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig: "
        "Value error, User-specified max_model_len (999999) is greater than the derived"
        " max_model_len"
    )


def test_a_killed_process_gets_no_made_up_reason(tmp_path: Path) -> None:
    log = tmp_path / "vllm.log"
    log.write_text('INFO: 127.0.0.1:60326 - "GET /v1/models HTTP/1.1" 200 OK\n')
    assert _proc.reason(str(log), fallback=False) == ""
    assert _proc.reason(str(log)).endswith("200 OK")
    assert _proc.ended(-9) == "was killed by SIGKILL"
    assert _proc.ended(1) == "exited with code 1"


def test_tail_lines_for_the_status_file(tmp_path: Path) -> None:
    log = tmp_path / "vllm.log"
    log.write_text("".join(f"\x1b[32mINFO\x1b[0m line {i}\n\n" for i in range(30)))
    assert _proc.tail_lines(str(log), 3) == ["INFO line 27", "INFO line 28", "INFO line 29"]
    assert _proc.tail_lines(str(tmp_path / "missing.log")) == []


def test_stop_tree_reaps_children_that_left_the_group(tmp_path: Path) -> None:
    # A parent that starts a grandchild in its own session (as Ray's daemons do).
    code = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " start_new_session=True)\n"
        "time.sleep(600)\n"
    )
    child = _proc.start("tree", [sys.executable, "-c", code], env={}, log_path=str(tmp_path / "l"))
    deadline = time.monotonic() + 20
    while not child.seen and time.monotonic() < deadline:
        child.remember_descendants()
        time.sleep(0.05)  # poll
    assert child.seen, "the grandchild never appeared"
    pids = set(child.seen) | {child.pid}
    child.stop(grace=2, sig=signal.SIGTERM)
    assert not _proc.alive(pids)


_SEGFAULT = (  # vLLM's crash report for a segfault in a CPU kernel, then the shutdown noise
    "!!!!!!! Segfault encountered !!!!!!!\n"
    '  File "./signal/../sysdeps/unix/sysv/linux/x86_64/libc_sigaction.c", line 0, in 0x7f\n'
    '  File "/tmp/vllm/csrc/cpu/cpu_fused_moe.cpp", line 242, in fused_moe_impl<c10::B>\n'
    "(EngineCore pid=198) ERROR [core.py:1512] RuntimeError: cancelled\n"
)
_W = "(Worker_DP0 pid=82) ERROR 11-23 19:20:40 [multiproc_executor.py:1063] "
_ACCESS_500 = (
    'INFO:     10.77.0.1:58384 - "POST /v1/chat/completions HTTP/1.1" 500 Internal Server Error\n'
)


@pytest.mark.parametrize(
    ("log", "expected"),
    [
        pytest.param(
            "\x1b[31mSome Ray subprocesses exited unexpectedly:\x1b[39m\n"
            "2026-11-23 16:51:30,032\tERR scripts.py:87 -- \x1b[31m\x1b[1mraylet\x1b[22m"
            " [exit code=-9]\x1b[0m\n"
            "ERR scripts.py:1315 -- \x1b[31mRemaining processes will be killed.\x1b[39m\n",
            "Some Ray subprocesses exited unexpectedly: raylet [exit code=-9]",
            id="ray-daemon-died",
        ),
        pytest.param(
            _SEGFAULT + _ACCESS_500,
            "Segfault encountered in /tmp/vllm/csrc/cpu/cpu_fused_moe.cpp line 242"
            " (fused_moe_impl)",
            id="native-crash-before-the-noise",
        ),
        pytest.param(
            "Fatal Python error: Segmentation fault\n\nCurrent thread 0x01 (most recent call "
            'first):\n  File "/opt/x/model.py", line 17 in forward\n',
            "Fatal Python error: Segmentation fault in /opt/x/model.py line 17 (forward)",
            id="python-fatal-error",
        ),
        pytest.param(
            "ERROR [core.py:1512] EngineDeadError: EngineCore encountered an issue.\n"
            + _ACCESS_500,
            "ERROR [core.py:1512] EngineDeadError: EngineCore encountered an issue.",
            id="an-http-500-line-is-not-a-reason",
        ),
        pytest.param(
            _W
            + "Traceback (most recent call last):\n"
            + _W
            + '  File "/v/site-packages/vllm/v1/worker/x.py", line 9, in run\n'
            + _W
            + '  File "/v/site-packages/vllm/distributed/base.py", line 296, in all_gatherv\n'
            + _W
            + "    raise NotImplementedError\n"
            + _W
            + "torch._dynamo.exc.ObservedNotImplementedError: raised NotImplementedError()\n"
            + "RuntimeError: Engine core initialization failed. See root cause above. Failed core"
            " proc(s): {'EngineCore_DP0': 1}\n",
            "RuntimeError: Engine core initialization failed. See root cause above. Failed core"
            " proc(s): {'EngineCore_DP0': 1}; first error: torch._dynamo.exc.ObservedNotImplement"
            "edError: raised NotImplementedError() in vllm/distributed/base.py line 296"
            " (all_gatherv)",
            id="vllm-says-the-cause-is-above",
        ),
        pytest.param(
            "(APIServer pid=9) WARNING 11-23 17:47:56 [system_utils.py:255] Found ulimit of 20000"
            " and failed to raise it with error ... like `OSError: [Errno 24] Too many open`\n"
            "INFO shutting down\n",
            "INFO shutting down",
            id="a-vllm-warning-is-not-a-reason",
        ),
    ],
)
def test_reason_names_what_died_first(tmp_path: Path, log: str, expected: str) -> None:
    path = tmp_path / "process.log"
    path.write_text(log)
    assert _proc.reason(str(path)) == expected


def test_a_program_that_cannot_start_is_a_one_line_failure(tmp_path: Path) -> None:
    from launchers.errors import RuntimeFailure

    for start in (_proc.start, _proc.start_piped):
        with pytest.raises(RuntimeFailure) as failed:
            start("x", ["/nonexistent/ray", "start"], env={}, log_path=str(tmp_path / "x.log"))
        assert failed.value.one_line().startswith(
            "cannot start /nonexistent/ray: No such file or directory (install it"
        )
