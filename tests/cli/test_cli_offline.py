"""The `farm` command's contract where no leader is needed, or the leader is down."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from farmtui import cli
from farmtui.localfarm import free_port
from tests.cli.fake_leader import was_contacted
from tests.helpers.farm import run_farm

# A Blender job's own flags, each refusal's frames added to them.
BLENDER_JOB = ["--renderer", "blender", "--scene", "a.blend", "--output", "r/f_####.png"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frames", "1-x"], "--frames: malformed frame list '1-x'"),
        (["--frames", "1,,2"], "--frames: malformed frame list '1,,2'"),
        (["--frames", "1,"], "--frames: malformed frame list '1,'"),
        (["--frames", "1-99999999999999999999"], "has a frame beyond ±999,999,999"),
        (["--frames", "1-10", "--chunk", "0"], "--chunk: 0 is out of range"),
        (["--priority", "101"], "--priority: 101 is out of range (0-100)"),
        (["--timeout-max", "5x"], "--timeout-max: bad duration '5x'"),
        (["--retry-delay", "-3"], "--retry-delay: bad duration '-3'"),
        (["--output", "../up/frame_####.png"], "escapes the sync root"),
        (["--output", "renders/frame.png"], "needs '#' padding"),
        (["--output", "d/" * 200 + "f_####.png"], "more than 128 folders deep"),
        # Rendered, then refused by the filesystem at its copy into place, on every retry.
        (["--output", "r/" + "x" * 228 + "_####.png"], "has a name longer than 232 bytes"),
        (["--scout", "1,99", "--frames", "1-10"], "scout frame 99 is not in the frame list"),
        (["--on-timeout", "panic"], "--on-timeout: 'panic' is not one of"),
        (["--env", "NOEQUALS"], "--env: 'NOEQUALS' is not K=V"),
        (["--renderer", "blender", "--output", "r/f_####.png"], "needs a scene"),
        ([*BLENDER_JOB, "--frames=-3-1"], "blender cannot render negative frames (-3)"),
        (
            [*BLENDER_JOB, "--frames", "1048574-1048576"],
            "blender cannot render frame 1048576: its last frame is 1,048,574",
        ),
        (
            [
                "--renderer",
                "ffmpeg",
                "--scene",
                "p/p_####.png",
                "--output",
                "r/f_####.png",
                "--frames=-5-5",
            ],
            "ffmpeg cannot render frame -5 of an image sequence: its frames start at 0",
        ),  # fmt: skip
        (["--renderer", "povray"], "unknown renderer 'povray'"),
        # Bytes of another encoding, as a shell hands them to Python: a traceback before.
        (["--name", "caf\udce9"], "--name: is not UTF-8 text"),
        (["--env", "K=caf\udce9"], "--env: is not UTF-8 text"),
        (["--output", "r/\udce9/f_####.png"], "--output: is not UTF-8 text"),
    ],
)
def test_submit_validates_locally_exits_2_and_sends_nothing(
    args: list[str],
    message: str,
    listening_port: tuple[int, socket.socket],
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, server = listening_port
    command = [] if "--renderer" in args else ["--", "true"]
    argv = ["submit", "--leader", f"http://127.0.0.1:{port}", "--token", "t", *args, *command]
    err = refused_locally(argv, server, capsys)
    assert err.startswith("farm submit: ")
    assert message in err


def refused_locally(
    argv: list[str], server: socket.socket, capsys: pytest.CaptureFixture[str]
) -> str:
    """``farm ARGV``'s one-line error (exit 2, nothing on stdout), the leader never called."""
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert not was_contacted(server)
    return err


def test_a_generic_job_without_a_command_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["submit", "--frames", "1-3", "--leader", "h:1", "--token", "t"]) == 2
    assert "needs its command after `--`" in capsys.readouterr().err


def test_bad_job_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "job.toml"
    job.write_text('frames = "1-10"\nframe = "3"\n', encoding="utf-8")
    assert cli.main(["submit", str(job), "--leader", "h:1", "--token", "t", "--", "true"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "frame: unknown key (did you mean 'frames'?)" in err


def test_jobs_against_a_leader_that_is_down() -> None:
    port = free_port()
    done = run_farm("jobs", "--leader", f"http://127.0.0.1:{port}", "--token", "t")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"farm jobs: cannot reach the leader at http://127.0.0.1:{port}: connection refused\n"
    )


def test_jobs_json_against_a_leader_that_is_down_prints_no_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    assert cli.main(["jobs", "--json", "--leader", f"127.0.0.1:{port}", "--token", "t"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "connection refused" in err


def test_no_leader_configured_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["jobs"]) == 2
    assert capsys.readouterr().err == (
        "farm jobs: no leader configured: pass --leader URL, set FARM_LEADER, "
        "or start one with `farm up`\n"
    )


def test_usage_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["move", "abc", "sideways"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "invalid choice: 'sideways'" in err
    # An unknown flag is the command's error, said in its name (it was plain "farm").
    with pytest.raises(SystemExit) as caught:
        cli.main(["submit", "--bogus", "--", "true"])
    assert caught.value.code == 2
    assert capsys.readouterr().err == (
        "farm submit: unrecognized arguments: --bogus (see `farm submit --help`)\n"
    )


def test_negative_frames_are_a_value_not_an_unknown_flag() -> None:
    """``--frames -3-2`` was "expected one argument" (only ``--frames=-3-2`` worked)."""
    parser = cli.build_parser(["submit"])
    args = parser.parse_args(["submit", "--frames", "-3-2", "--scout", "-3,-1"])
    assert (args.frames, args.scout) == ("-3-2", "-3,-1")


def test_renderer_options_are_a_value_not_an_unknown_flag() -> None:
    """``--extra-args -a`` was "expected one argument" (break round 35a)."""
    parser = cli.build_parser(["submit"])
    args = parser.parse_args(["submit", "--extra-args", "-a", "--frames", "1"])
    assert (args.extra_args, args.frames) == (["-a"], "1")


def test_renderer_options_given_twice_are_all_kept() -> None:
    """Given twice, the first ``--extra-args`` was dropped without a word (break round 35b)."""
    parser = cli.build_parser(["submit"])
    given = ["submit", "--extra-args", "-E CYCLES", "--extra-args=-t 8", "--extra-args", "-a"]
    assert parser.parse_args(given).extra_args == ["-E", "CYCLES", "-t", "8", "-a"]


@pytest.mark.parametrize(
    ("given", "said"),
    [
        (["--extra-args=--"], "--extra-args: '--' alone is no option of a renderer"),
        (["--extra-args", "-E 'CYCLES"], '--extra-args: cannot split "-E \'CYCLES": '),
    ],
)
def test_renderer_options_that_say_nothing_are_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], given: list[str], said: str
) -> None:
    """``--extra-args=--`` was dropped without a word (argparse takes a lone ``--`` out)."""
    with pytest.raises(SystemExit) as ended:
        cli.build_parser(["submit"]).parse_args(["submit", *given, "--frames", "1"])
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"farm submit: {said}"), err
    assert err.count("\n") == 1, err


def test_priority_is_checked_before_any_request(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["priority", "abc", "200", "--leader", "h:1", "--token", "t"]) == 2
    assert "priority: 200 is out of range" in capsys.readouterr().err


def test_set_needs_something_to_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["set", "abc", "--leader", "h:1", "--token", "t"]) == 2
    assert "nothing to set" in capsys.readouterr().err


@pytest.mark.parametrize("action", ["cancel", "delete"])
def test_destructive_actions_refuse_without_a_terminal_or_yes(
    action: str, listening_port: tuple[int, socket.socket]
) -> None:
    port, server = listening_port
    done = run_farm(action, "abc", "--leader", f"http://127.0.0.1:{port}", "--token", "t", input="")
    assert done.returncode == 2
    assert done.stderr == (
        f"farm {action}: refusing to {action} without --yes: stdin is not a terminal to ask on\n"
    )
    assert not was_contacted(server)


def test_farm_jobs_does_not_import_textual_or_uvicorn() -> None:
    code = (
        "import sys\n"
        "from farmtui import cli\n"
        f"cli.main(['jobs', '--leader', 'http://127.0.0.1:{free_port()}', '--token', 't'])\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'textual', 'uvicorn',"
        " 'starlette', 'server', 'agent'}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_python_dash_m_farmtui_is_the_farm_command() -> None:
    done = run_farm("--help")
    assert done.returncode == 0
    for command in ("up", "leader", "agent", "console", "submit", "jobs", "show", "logs", "token"):
        assert command in done.stdout


def test_a_mistyped_command_is_one_line_naming_the_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["shwo", "abc"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "invalid choice: 'shwo'" in err
    for command in ("show", "submit", "whoami", "migrate", "blender-addon"):
        assert f"'{command}'" in err


def test_a_command_builds_only_its_own_parser_and_keeps_every_flag() -> None:
    """`farm show` starts without the other commands' parsers and what their flags import."""
    code = (
        "import sys; from farmtui import cli; p = cli.build_parser(['show', 'abc']);"
        "print(p.commands, sorted(m for m in ('farmtui.jobfields', 'farmtui.demo_render', "
        "'farmtui.service_units', 'tomllib') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "['show'] []"
    shown = run_farm("show", "--help")
    assert shown.returncode == 0
    for flag in ("--chunks", "--after", "--openjd", "--leader", "--token", "--json"):
        assert flag in shown.stdout
    submit = run_farm("submit", "--help")
    assert "--frames" in submit.stdout
    assert "--print-service" in run_farm("agent", "--help").stdout


def _farm_jobs_after(setup: str) -> subprocess.CompletedProcess[str]:
    """``farm jobs`` in a Python that first runs ``setup`` (the interrupt to test)."""
    code = setup + "from farmtui.cli import main\nraise SystemExit(main(['jobs']))\n"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_ctrl_c_while_farm_loads_its_commands_exits_130_without_a_traceback() -> None:
    """Most of `farm`'s start is importing its commands (~70 ms): a Ctrl-C then printed
    a KeyboardInterrupt traceback. The interrupt is raised here at that import."""
    done = _farm_jobs_after(
        "import sys\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'farmtui.cli.reading_jobs':\n"
        "            raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, CtrlC())\n"
    )
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_ctrl_c_while_farm_builds_its_message_decoders_waits_until_they_are_built() -> None:
    """msgspec crashed the interpreter (SIGSEGV) now and then when a KeyboardInterrupt
    landed as it first built a decoder's types: 19 crashes in 300 Ctrl-Cs 45-68 ms into
    `farm jobs`. The Ctrl-C now comes once the modules are loaded, as a quiet 130."""
    done = _farm_jobs_after(
        "import atexit, os, signal, sys\n"
        # As in a terminal: a test run started in the background inherits SIGINT ignored.
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        "class CtrlC:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'farmtui.protocol.agent_messages':\n"
        "            os.kill(os.getpid(), signal.SIGINT)\n"
        "sys.meta_path.insert(0, CtrlC())\n"
        "def built():\n"
        "    module = sys.modules.get('farmtui.protocol.agent_messages')\n"
        "    print('built' if hasattr(module, 'agent_to_leader') else 'interrupted')\n"
        "atexit.register(built)\n"
    )
    assert done.returncode == 130, done.stderr
    assert done.stdout.strip() == "built"
    assert "Traceback" not in done.stderr


NESTED = {
    "nested.toml": "x = " + "[" * 5000 + "]" * 5000 + "\n",
    "inline.toml": "x = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n",
    "nested.template.json": "[" * 100_000 + "]" * 100_000,
    "nested.template.yaml": "a: " + "[" * 100_000 + "]" * 100_000 + "\n",
}


@pytest.mark.parametrize("name", sorted(NESTED))
def test_a_job_file_nested_too_deeply_is_one_line_not_a_crash(
    tmp_path: Path, name: str, listening_port: tuple[int, socket.socket]
) -> None:
    """A traceback for the TOML and JSON, a segmentation fault for the YAML (its C
    parser's stack), before."""
    path = tmp_path / name
    path.write_text(NESTED[name])
    port, server = listening_port
    done = run_farm("submit", str(path), "--leader", f"http://127.0.0.1:{port}", "--token", "t")
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr[-2000:]
    assert "nested too deeply" in done.stderr
    assert not was_contacted(server)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create"], "farm token create takes --role ROLE"),
        (["create", "abc", "--role", "user"], "farm token create takes --role ROLE"),
        (["revoke"], "farm token revoke needs the token's ID"),
        (["list", "abc"], "farm token list takes no ID"),
        (["revoke", "abc", "--role", "user"], "farm token revoke takes no --role"),
        (["revoke", "a/b"], "'a/b' is not a token ID"),
        (["create", "--role", "agent"], "an agent token is named for its node: --name NODE"),
    ],
)
def test_token_commands_check_their_arguments_before_calling(
    args: list[str],
    message: str,
    listening_port: tuple[int, socket.socket],
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, server = listening_port
    argv = ["token", *args, "--leader", f"http://127.0.0.1:{port}", "--token", "t"]
    assert message in refused_locally(argv, server, capsys)


def test_farm_up_keeps_the_farm_when_its_console_stops_on_an_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A console that died (Textual printed its error, exit code 1) is no quit: before,
    ``farm up`` took it for ``ctrl+q`` and stopped the farm, renders and all, exit 0."""
    import farmtui.console.app
    from farmtui import localfarm

    watched: list[bool] = []

    def watch_table(farm: object, client: object, clear: bool) -> None:
        watched.append(clear)
        raise KeyboardInterrupt  # the operator's Ctrl-C, which run_up turns into 130

    monkeypatch.setattr(farmtui.console.app, "run_console", lambda *a, **k: 1)
    monkeypatch.setattr(localfarm, "watch_table", watch_table)

    class Farm:
        url = "http://127.0.0.1:1"

        def admin_token(self) -> str:
            return "t"

    with pytest.raises(KeyboardInterrupt):
        localfarm._console(Farm(), object())  # type: ignore[arg-type]
    assert watched == [False]
    assert "the farm goes on" in capsys.readouterr().out
    monkeypatch.setattr(farmtui.console.app, "run_console", lambda *a, **k: 0)
    assert localfarm._console(Farm(), object()) == 0  # type: ignore[arg-type]
    assert watched == [False]  # a quit: nothing more to watch
