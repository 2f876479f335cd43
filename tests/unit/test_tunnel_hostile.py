"""`vllm-hpc tunnel` with hostile input: a user or login host that ssh would read as an
option (``-oProxyCommand=...`` runs a command on the laptop), or that holds whitespace or
a control character, is refused as one line (exit 2); and the ssh line ends options with
``--`` before the destination, which ssh's own parser accepts there."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from launchers.cli import cli
from launchers.errors import InputError
from launchers.observe import tunnel

URL = "http://10.77.0.11:8100/v1"
HOSTILE = [
    "-oProxyCommand=touch /tmp/pwned",
    "-oProxyCommand=sh",
    "-p2222",
    "ada b",
    "ada\tb",
    "ada\nb",
    "ada\x00b",
    "ada\x1b[2J",
    "ada\u2028b",
    " ada",
]


@pytest.mark.parametrize("user", HOSTILE)
def test_a_hostile_user_is_refused(user: str) -> None:
    with pytest.raises(InputError) as caught:
        tunnel.ssh_argv(URL, "login.example.org", None, user)
    line = caught.value.one_line()
    assert line.startswith("--user: ") and "\n" not in line, line


@pytest.mark.parametrize("login", HOSTILE)
def test_a_hostile_login_host_is_refused(login: str) -> None:
    with pytest.raises(InputError) as caught:
        tunnel.ssh_argv(URL, login, None, "ada")
    line = caught.value.one_line()
    assert line.startswith("--login: ") and "\n" not in line, line


@pytest.mark.parametrize("login", HOSTILE)
def test_a_hostile_login_host_from_the_environment_is_refused(login: str) -> None:
    with pytest.raises(InputError) as caught:
        tunnel.login_host({"VLLM_HPC_LOGIN_HOST": login}, None)
    assert caught.value.one_line().startswith("VLLM_HPC_LOGIN_HOST: ")


def test_a_hostile_default_user_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("getpass.getuser", lambda: "-oProxyCommand=sh")
    with pytest.raises(InputError, match="--user: "):
        tunnel.ssh_argv(URL, "login.example.org", None)


def test_the_destination_follows_the_end_of_options() -> None:
    argv = tunnel.ssh_argv(URL, "login.example.org", 9000, "ada")
    assert argv[-2:] == ["--", "ada@login.example.org"]
    assert argv[:-2] == ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-L",
                         "9000:10.77.0.11:8100"]  # fmt: skip


@pytest.mark.skipif(shutil.which("ssh") is None, reason="no ssh client here")
def test_ssh_itself_reads_the_line_as_meant() -> None:
    """``ssh -G`` parses the line and prints the configuration it would use, connecting
    to nothing: ``--`` is accepted before the destination, and the forward is kept."""
    argv = tunnel.ssh_argv(URL, "login.example.org", 9000, "ada")
    done = subprocess.run(
        [argv[0], "-G", *argv[1:]], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    config = dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)
    assert config["user"] == "ada" and config["hostname"] == "login.example.org"
    assert config["localforward"] == "9000 [10.77.0.11]:8100"


@pytest.mark.parametrize(
    ("options", "field"),
    [
        (["--user", "-oProxyCommand=touch /tmp/pwned"], "--user: "),
        (["--login", "-oProxyCommand=sh"], "--login: "),
        (["--login", "login example"], "--login: "),
    ],
)
def test_the_tunnel_command_refuses_hostile_input_as_bad_input(
    monkeypatch: pytest.MonkeyPatch, options: list[str], field: str
) -> None:
    monkeypatch.setattr("launchers.cli.service._target_url", lambda target, job_root: URL)
    monkeypatch.setattr("socket.getfqdn", lambda: "login.example.org")  # not localhost
    ran: list[list[str]] = []
    monkeypatch.setattr("launchers._proc.exec_replace", lambda argv: ran.append(list(argv)))
    result = CliRunner().invoke(cli, ["tunnel", "llama", *options, "--run"],
                                standalone_mode=False)  # fmt: skip
    assert isinstance(result.exception, InputError), result.output
    assert result.exception.exit_code == 2
    assert result.exception.one_line().startswith(field)
    assert ran == [] and result.output == ""


@pytest.mark.parametrize("name", ["localhost", "LOCALHOST", "localhost.localdomain", "127.0.0.1"])
def test_the_login_host_is_never_guessed_as_localhost(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("socket.getfqdn", lambda: name)
    with pytest.raises(InputError) as caught:
        tunnel.login_host({}, None)
    assert caught.value.one_line().startswith("--login: this machine calls itself")
    assert tunnel.login_host({"VLLM_HPC_LOGIN_HOST": "login01"}, None) == "login01"
    monkeypatch.setattr("socket.getfqdn", lambda: "login01.example.org")
    assert tunnel.login_host({}, None) == "login01.example.org"


# --- the login host from the site file ---------------------------------------------------


def tunnel_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, site: str, *options: str) -> str:
    """``vllm-hpc tunnel llama --user ada OPTIONS`` with ``site`` as the site file and a
    machine that calls itself localhost (so nothing is guessed): the ssh line."""
    path = tmp_path / "site.yaml"
    path.write_text(site)
    monkeypatch.setenv("VLLM_HPC_SITE_CONFIG", str(path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("VLLM_HPC_REGISTRY", raising=False)
    monkeypatch.setattr("launchers.cli.service._target_url", lambda target, job_root: URL)
    monkeypatch.setattr("socket.getfqdn", lambda: "localhost")
    result = CliRunner().invoke(cli, ["tunnel", "llama", "--user", "ada", *options],
                                standalone_mode=False)  # fmt: skip
    assert result.exception is None, (result.output, result.exception)
    return result.output.splitlines()[0]  # the ssh line (then a hint, on stderr)


def test_the_tunnel_takes_the_login_host_from_the_site_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Order: --login, $VLLM_HPC_LOGIN_HOST, the site file's login_host, the guess."""
    site = "site:\n  login_host: hpc-login.example.org\n"
    monkeypatch.delenv("VLLM_HPC_LOGIN_HOST", raising=False)
    assert tunnel_line(monkeypatch, tmp_path, site).endswith(" -- ada@hpc-login.example.org")
    assert tunnel_line(monkeypatch, tmp_path, site, "--login", "l2").endswith(" -- ada@l2")
    monkeypatch.setenv("VLLM_HPC_LOGIN_HOST", "l3")
    assert tunnel_line(monkeypatch, tmp_path, site).endswith(" -- ada@l3")


def test_the_site_file_is_read_only_when_nothing_else_names_the_login_host() -> None:
    def site() -> str:
        raise AssertionError("the site file was read")

    assert tunnel.login_host({}, "l1", site) == "l1"
    assert tunnel.login_host({"VLLM_HPC_LOGIN_HOST": "l2"}, None, site) == "l2"
    assert tunnel.login_host({}, None, lambda: "l3") == "l3"


@pytest.mark.parametrize("login", ["-oProxyCommand=sh", "login example", "a_b", "x" * 254, "a..b"])
def test_a_hostile_login_host_in_the_site_file_is_refused(login: str) -> None:
    from launchers.errors import RegistryError
    from launchers.input.registry import merge_layers

    with pytest.raises(RegistryError) as caught:
        merge_layers([("site.yaml", {"site": {"login_host": login}})])
    line = caught.value.one_line()
    assert "login_host" in line and "\n" not in line, line


def test_a_misspelt_login_host_key_names_the_valid_ones() -> None:
    from launchers.errors import RegistryError
    from launchers.input.registry import parse_registry_text

    with pytest.raises(RegistryError, match="unknown key 'login' .*login_host"):
        parse_registry_text("site:\n  login: hpc\n", "site.yaml")
