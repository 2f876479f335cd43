"""Hostile values in the Kubernetes, compose, Ray cluster and Swarm renders.

Each value is either refused with the exact one-line message (exit 2 through the CLI),
or rendered so that the tool reading the file gets back exactly the input: the YAML is
parsed back with ``yaml.safe_load``, then Kubernetes' ``$(VAR)`` expansion, compose's
(and ``docker stack deploy``'s) ``$VAR``/``${VAR}`` interpolation, compose's ``.env``
parser or the shell that runs a Ray cluster file's commands is applied (emulated below,
with every variable defined) and the result must equal the input. Ray token
auth is on every container that starts Ray, and no secret value is in any render.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from launchers.errors import InputError
from launchers.plan.launch import LaunchPlan
from launchers.render.checks import show
from launchers.render.compose import render_compose, render_compose_files, render_env_example
from launchers.render.k8s import STATEFULSET_SCRIPT, render_k8s
from launchers.render.ray_cluster import RayClusterOptions, render_ray_cluster
from launchers.render.swarm import render_swarm

from .conftest import assert_one_clear_line
from .helpers.cli import run

SMALL = "llama-3.2-3b-instruct"
BIG = "llama-3.1-70b-instruct"
TOKEN_PATH = "/run/secrets/ray_token"  # noqa: S105 - a path
FIX_CONTROL = "(remove it: rendered files take one line per value)"


# --- what the readers do with the text ------------------------------------------------


def k8s_expand(text: str) -> str:
    """Kubernetes' expansion of ``$(VAR)`` in env values, command and args
    (apimachinery third_party/forked/golang/expansion), with every variable defined:
    ``$$`` is one ``$``; ``$(NAME)`` is replaced; any other ``$x`` is kept."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    out.append("EXPANDED")
                    i = end + 1
                    continue
            out.append("$" + nxt)
            i += 2
            continue
        out.append(text[i])
        i += 1
    return "".join(out)


_COMPOSE_VAR = re.compile(r"\$(\$|\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*|.?)")


def compose_interpolate(text: str) -> str:
    """Compose's interpolation with every variable defined: ``$$`` is one ``$``; a
    ``$`` followed by anything else is a variable (or an error): marked ``EXPANDED``."""
    return _COMPOSE_VAR.sub(lambda m: "$" if m.group(1) == "$" else "EXPANDED", text)


def dotenv_read(line: str) -> tuple[str, str]:
    """One ``KEY=VALUE`` line as compose's dotenv parser reads it (compose-go
    dotenv/parser.go): single quotes are literal up to the next quote, unquoted
    values end at '#', are right-trimmed and interpolated."""
    key, _, value = line.partition("=")
    if value.startswith("'"):
        end = 1
        while value[end] != "'" or value[end - 1] == "\\":
            end += 1
        assert value[end + 1 :] == "", line
        return key, value[1:end]
    return key, compose_interpolate(value.split("#")[0].rstrip())


def shell_words(line: str) -> list[str]:  # noqa: PLR0912 - one branch per kind of char
    """The words bash makes of ``line`` (quotes, backslashes, blanks), with every ``$``
    outside single quotes marked ``EXPANDED`` (a variable, whatever follows)."""
    words: list[str] = []
    word: list[str] | None = None
    quote = ""
    i = 0
    while i < len(line):
        char = line[i]
        if quote == "'":
            if char == "'":
                quote = ""
            else:
                word = [*(word or []), char]
        elif char == "$":
            word = [*(word or []), "EXPANDED"]
        elif quote == '"':
            if char == '"':
                quote = ""
            elif char == "\\" and i + 1 < len(line) and line[i + 1] in '$`"\\':
                word = [*(word or []), line[i + 1]]
                i += 1
            else:
                word = [*(word or []), char]
        elif char in "'\"":
            quote, word = char, word or []
        elif char == "\\" and i + 1 < len(line):
            word = [*(word or []), line[i + 1]]
            i += 1
        elif char in " \t":
            if word is not None:
                words.append("".join(word))
            word = None
        else:
            word = [*(word or []), char]
        i += 1
    assert not quote, line
    if word is not None:
        words.append("".join(word))
    return words


LOCAL = RayClusterOptions(head_ip="10.0.0.1", worker_ips=("10.0.0.2",))


def ray_cluster(launch: LaunchPlan) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(render_ray_cluster(launch, LOCAL))
    return doc


def ray_leader_words(launch: LaunchPlan) -> list[str]:
    return shell_words(ray_cluster(launch)["head_start_ray_commands"][-1])


def swarm_services(launch: LaunchPlan) -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load(render_swarm(launch))["services"]
    return services


# --- helpers --------------------------------------------------------------------------


def _templates(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] == "LeaderWorkerSet":
        group = doc["spec"]["leaderWorkerTemplate"]
        return [group["leaderTemplate"], group["workerTemplate"]]
    if doc["kind"] == "StatefulSet":
        return [doc["spec"]["template"]]
    return []


def k8s_containers(text: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(container, pod spec) for every container of every pod template."""
    out = []
    for doc in yaml.safe_load_all(text):
        for template in _templates(doc):
            out += [(c, template["spec"]) for c in template["spec"]["containers"]]
    return out


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def header(text: str) -> list[str]:
    lines = text.splitlines()
    return lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]


def one_line(call: Callable[[], object]) -> str:
    with pytest.raises(InputError) as info:
        call()
    return info.value.one_line()


@pytest.fixture
def small(make_plan: Callable[..., LaunchPlan]) -> LaunchPlan:
    return make_plan(model=SMALL)


@pytest.fixture
def big(make_plan: Callable[..., LaunchPlan]) -> LaunchPlan:
    return make_plan(model=BIG, nodes=2, gpus_per_node=4)


# --- model names ----------------------------------------------------------------------

# Rendered: read back exactly by Kubernetes and by compose's .env parser.
SAFE_MODELS = [
    "org/$(HOME)",
    "org/$(VLLM_API_KEY)x",
    "org/${X}",
    "org/$X",
    "org/$$(X)",
    "org/x$",
    'org/"quoted"',
    "org/x: y",
    "org/x #not-a-comment",
    "org/[a, b]",
    "org/{a: 1}",
    "org/&anchor *alias !tag",
    "org/ spaced ",
    "/models/a b/c",
    "org/" + "x" * 4000,
    "org/" + "word " * 700,
]
REFUSED_MODELS = [
    ("org/x\ntouch PWNED #", "model: 'org/x\\ntouch PWNED #' has a control character (U+000A)"),
    ("org/x\nVLLM_HPC_JOB_DIR=/tmp", "model: 'org/x\\nVLLM_HPC_JOB_DIR=/tmp' has a control"),
    ("org/x\r", "model: 'org/x\\r' has a control character (U+000D)"),
    ("org/x\x00y", "model: 'org/x\\x00y' has a control character (U+0000)"),
    ("org/x\x1b[2J", "model: 'org/x\\x1b[2J' has a control character (U+001B)"),
    ("org/x\u2028y", "model: 'org/x\\u2028y' has a control character (U+2028)"),
    ("org/x\x85", "model: 'org/x\\x85' has a control character (U+0085)"),
    ("org/x\ty", "model: 'org/x\\ty' has a control character (U+0009)"),
    (
        "--api-key=abc/def",
        "model: '--api-key=abc/def' starts with '-' (vLLM would read it as a flag) (name a "
        "registry id, a Hugging Face id or an absolute path)",
    ),
    ("-x", "model: '-x' starts with '-'"),
    (
        "org/" + "x" * 5000,
        "model: 'org/xxxxxxxxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxxxxxxxxxxxx' "
        "is 5004 characters long (use at most 4096)",
    ),
]


@pytest.mark.parametrize("kind", ["lws", "statefulset"])
@pytest.mark.parametrize("model", SAFE_MODELS)
def test_k8s_model_is_read_back_exactly(big: LaunchPlan, kind: str, model: str) -> None:
    launch = big.model_copy(update={"name": model})
    text = render_k8s(launch, kind="lws" if kind == "lws" else "statefulset")
    docs = list(yaml.safe_load_all(text))
    reference = list(
        yaml.safe_load_all(render_k8s(big, kind="lws" if kind == "lws" else "statefulset"))
    )
    assert [sorted(d) for d in docs] == [sorted(d) for d in reference]  # no added keys
    assert all(line.startswith("# ") for line in header(text))
    leader = k8s_containers(text)[0][0]
    if kind == "lws":
        arg = next(a for a in leader["command"] if a.startswith("--model="))
        assert k8s_expand(arg) == f"--model={model}"
        assert "$" not in model or arg != f"--model={model}"  # escaped, not left as is
    else:
        assert k8s_expand(env_of(leader)["VLLM_HPC_MODEL"]) == model


@pytest.mark.parametrize("model", SAFE_MODELS)
def test_compose_model_is_read_back_exactly(big: LaunchPlan, model: str) -> None:
    launch = big.model_copy(update={"name": model})
    if "\\" in model or "'" in model:
        pytest.skip("refused below")
    lines = render_env_example(launch).splitlines()
    (line,) = [line for line in lines if line.startswith("MODEL=")]
    assert dotenv_read(line) == ("MODEL", model)
    assert not [line for line in lines if line and not line.startswith("#") and "=" not in line]
    for text in render_compose_files(launch).values():
        if text.startswith("# vllm-hpc") and "services:" in text:
            assert all(line.startswith("# ") for line in header(text))
            yaml.safe_load(text)


@pytest.mark.parametrize("model", SAFE_MODELS)
def test_ray_cluster_and_swarm_model_is_read_back_exactly(big: LaunchPlan, model: str) -> None:
    launch = big.model_copy(update={"name": model})
    text = render_ray_cluster(launch, LOCAL)
    assert all(line.startswith("# ") for line in header(text))
    assert f"--model={model}" in ray_leader_words(launch)
    head = swarm_services(launch)["head"]
    arg = next(a for a in head["command"] if a.startswith("--model="))
    assert compose_interpolate(arg) == f"--model={model}"
    assert all(line.startswith("# ") for line in header(render_swarm(launch)))


def test_shell_words_sees_what_is_expanded() -> None:
    # the emulation the Ray cluster tests rely on: unquoted and double-quoted $ expand
    assert shell_words("a 'b $X' \"c $Y\" $Z d\\ e") == [
        "a",
        "b $X",
        "c EXPANDEDY",
        "EXPANDEDZ",
        "d e",
    ]


@pytest.mark.parametrize(("model", "expected"), REFUSED_MODELS)
def test_bad_model_is_refused_by_both(big: LaunchPlan, model: str, expected: str) -> None:
    launch = big.model_copy(update={"name": model})
    for render in (
        lambda: render_k8s(launch),
        lambda: render_k8s(launch, kind="statefulset"),
        lambda: render_compose(launch, "head"),
        lambda: render_env_example(launch),
        lambda: render_ray_cluster(launch, LOCAL),
        lambda: render_swarm(launch),
    ):
        message = one_line(render)
        assert message.startswith(expected), message
        if "control character" in expected:
            assert message.endswith(FIX_CONTROL), message


@pytest.mark.parametrize("model", ["org/it's", "org/back\\slash", "org/x\\"])
def test_compose_refuses_what_dotenv_cannot_carry(big: LaunchPlan, model: str) -> None:
    launch = big.model_copy(update={"name": model})
    message = one_line(lambda: render_env_example(launch))
    assert message.startswith(f"model: {model!r} has a quote or a backslash"), message
    # Kubernetes carries it (YAML quotes it).
    leader = k8s_containers(render_k8s(launch))[0][0]
    assert f"--model={model}" in leader["command"]


def test_compose_model_path_is_escaped(big: LaunchPlan) -> None:
    launch = big.model_copy(update={"model": "/models/$HOME/${X}/$(Y)"})
    service = yaml.safe_load(render_compose(launch, "head"))["services"]["vllm-head"]
    bind = service["volumes"][-1]
    assert bind["source"] == bind["target"] == "/models/$$HOME/$${X}/$$(Y)"
    assert compose_interpolate(bind["source"]) == launch.model
    bad = big.model_copy(update={"model": "/models/a\nb"})
    assert one_line(lambda: render_compose(bad, "head")).startswith(
        "model path: '/models/a\\nb' has a control character (U+000A)"
    )


def test_statefulset_script_survives_expansion() -> None:
    # The script is constant text in a command: Kubernetes must not change it.
    assert k8s_expand(STATEFULSET_SCRIPT) == STATEFULSET_SCRIPT


# --- env values and names ---------------------------------------------------------------

SAFE_VALUES = [
    "$(VLLM_API_KEY)",
    "$(HOME)/x",
    "${X}",
    "$X",
    "$$",
    "a$",
    'it\'s "quoted"',
    "key: value",
    "- item",
    "--flag",
    "#comment",
    "x" * 4096,
    "",
]


@pytest.mark.parametrize("value", SAFE_VALUES)
def test_env_value_is_read_back_exactly(big: LaunchPlan, value: str) -> None:
    launch = big.model_copy(update={"env": {"FOO": value}})
    for kind in ("lws", "statefulset"):
        for container, _ in k8s_containers(render_k8s(launch, kind=kind)):
            assert k8s_expand(env_of(container)["FOO"]) == value
    for role in ("head", "worker"):
        doc = yaml.safe_load(render_compose(launch, role))
        (service,) = doc["services"].values()
        rendered = service["environment"]["FOO"]
        assert rendered == value.replace("$", "$$")
        assert compose_interpolate(rendered) == value
    for service in swarm_services(launch).values():
        assert compose_interpolate(service["environment"]["FOO"]) == value
    options = [shell_words(o) for o in ray_cluster(launch)["docker"]["run_options"]]
    assert [f"--env=FOO={value}"] in options


REFUSED_ENV = [
    ({"FOO": "a\nBAR=1"}, "env FOO: 'a\\nBAR=1' has a control character (U+000A) " + FIX_CONTROL),
    ({"FOO": "a\rb"}, "env FOO: 'a\\rb' has a control character (U+000D) " + FIX_CONTROL),
    (
        {"HF_TOKEN": "hf_x\n"},
        "env HF_TOKEN: 'hf_x\\n' has a control character (U+000A) " + FIX_CONTROL,
    ),
    (
        {"FOO": "x" * 4097},
        "env FOO: 'xxxxxxxxxxxxxxxxxxxxxxxxxxx...xxxxxxxxxxxxxxxxxxxxxxxxxxxx' is "
        "4097 characters long (use at most 4096)",
    ),
    (
        {"BAD-KEY": "1"},
        "env: 'BAD-KEY' is not a variable name (use letters, digits and '_', not "
        "starting with a digit)",
    ),
    ({"1X": "1"}, "env: '1X' is not a variable name"),
    ({"X Y": "1"}, "env: 'X Y' is not a variable name"),
    ({"X\nkind: Pod": "1"}, "env: 'X\\nkind: Pod' has a control character (U+000A)"),
    ({"$(X)": "1"}, "env: '$(X)' is not a variable name"),
    (
        {"RAY_AUTH_MODE": "disabled"},
        "env RAY_AUTH_MODE: is set by vllm-hpc in containers (Ray "
        "token auth and the API key come from Secrets or 0600 files) (drop RAY_AUTH_MODE from "
        "the registry or site env)",
    ),
    ({"VLLM_API_KEY": "abc"}, "env VLLM_API_KEY: is set by vllm-hpc in containers"),
    ({"RAY_AUTH_TOKEN": "abc"}, "env RAY_AUTH_TOKEN: is set by vllm-hpc in containers"),
]


@pytest.mark.parametrize(("env", "expected"), REFUSED_ENV)
def test_bad_env_is_refused_by_both(big: LaunchPlan, env: dict[str, str], expected: str) -> None:
    launch = big.model_copy(update={"env": env})
    for render in (
        lambda: render_k8s(launch),
        lambda: render_k8s(launch, kind="statefulset"),
        lambda: render_compose(launch, "head"),
        lambda: render_compose(launch, "worker"),
        lambda: render_ray_cluster(launch, LOCAL),
        lambda: render_swarm(launch),
    ):
        message = one_line(render)
        assert message.startswith(expected), message


# --- secret env: referenced, never written ----------------------------------------------

SECRETS = {"HF_TOKEN": "hf_SECRETVALUE1", "WANDB_API_KEY": "wandb$SECRETVALUE2"}


def test_k8s_secret_env_is_a_secret_key_ref(big: LaunchPlan) -> None:
    launch = big.model_copy(update={"env": {**SECRETS, "NCCL_DEBUG": "INFO"}})
    for kind in ("lws", "statefulset"):
        text = render_k8s(launch, kind=kind, namespace="llm")
        assert "SECRETVALUE" not in text
        for container, _ in k8s_containers(text):
            env = env_of(container)
            assert env["NCCL_DEBUG"] == "INFO"
            for name in SECRETS:
                assert env[name] == {
                    "secretKeyRef": {
                        "name": "vllm-llama-3-1-70b-instruct-env",
                        "key": name,
                        "optional": False,
                    }
                }
        assert (
            "# Secret environment (HF_TOKEN, WANDB_API_KEY; their values are not in this "
            "manifest):" in header(text)
        )
        assert (
            "#   kubectl -n llm create secret generic vllm-llama-3-1-70b-instruct-env "
            "--from-env-file=secret.env" in header(text)
        )
    named = render_k8s(launch, env_secret="team.hf")  # noqa: S106
    assert all(
        env_of(c)["HF_TOKEN"]["secretKeyRef"]["name"] == "team.hf" for c, _ in k8s_containers(named)
    )


def test_k8s_without_secret_env_reads_no_env_secret(big: LaunchPlan) -> None:
    text = render_k8s(big)
    assert "secretKeyRef" not in text and "--from-env-file" not in text


def test_compose_secret_env_is_an_env_file(big: LaunchPlan) -> None:
    launch = big.model_copy(update={"env": dict(SECRETS)})
    files = render_compose_files(launch)
    assert not [name for name, text in files.items() if "SECRETVALUE" in text]
    for name in ("compose.head.yaml", "compose.worker.yaml"):
        (service,) = yaml.safe_load(files[name])["services"].values()
        assert service["env_file"] == [".env", "secret.env"]
        assert not set(SECRETS) & set(service["environment"])
        assert "# Secret environment (HF_TOKEN, WANDB_API_KEY; the values are not here):" in header(
            files[name]
        )
        assert "#   NAME='VALUE' lines in secret.env beside this file (chmod 600 secret.env)" in (
            header(files[name])
        )
    plain = render_compose(big, "head")
    assert "secret.env" not in plain


# --- Ray token auth on every container ------------------------------------------------


@pytest.mark.parametrize("kind", ["lws", "statefulset"])
@pytest.mark.parametrize("nodes", [1, 2])
def test_every_k8s_container_has_ray_token_auth(
    make_plan: Callable[..., LaunchPlan], kind: str, nodes: int
) -> None:
    launch = make_plan(model=BIG, nodes=nodes, gpus_per_node=8 // nodes, tp=8 // nodes, pp=nodes)
    text = render_k8s(launch, kind=kind, ray_token_secret="my-ray-token")  # type: ignore[arg-type]  # noqa: S106
    containers = k8s_containers(text)
    assert len(containers) == (2 if kind == "lws" else 1)
    for container, pod in containers:
        env = env_of(container)
        assert env["RAY_AUTH_MODE"] == "token"
        assert env["RAY_AUTH_TOKEN_PATH"] == TOKEN_PATH
        assert "RAY_AUTH_TOKEN" not in env
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == TOKEN_PATH]
        assert mount == {
            "name": "ray-token",
            "mountPath": TOKEN_PATH,
            "subPath": "ray_token",
            "readOnly": True,
        }
        volume = next(v for v in pod["volumes"] if v["name"] == "ray-token")
        assert volume["secret"] == {
            "secretName": "my-ray-token",
            "defaultMode": 0o400,
            "optional": False,
        }
    assert "#   kubectl -n default create secret generic my-ray-token " in text
    assert "#   (umask 077 && openssl rand -hex 32 > ray_token) &&" in header(text)


def test_every_compose_service_has_ray_token_auth(big: LaunchPlan) -> None:
    files = render_compose_files(big)
    for name in ("compose.head.yaml", "compose.worker.yaml"):
        doc = yaml.safe_load(files[name])
        (service,) = doc["services"].values()
        assert service["environment"]["RAY_AUTH_MODE"] == "token"
        assert service["environment"]["RAY_AUTH_TOKEN_PATH"] == TOKEN_PATH
        assert "RAY_AUTH_TOKEN" not in service["environment"]
        # compose mounts secret NAME at /run/secrets/NAME
        assert service["secrets"] == ["ray_token"] and TOKEN_PATH.endswith("/ray_token")
        # compose refuses to start when .env names no token file (fail closed)
        assert doc["secrets"] == {
            "ray_token": {
                "file": "${RAY_TOKEN_FILE:?set RAY_TOKEN_FILE in .env to the 0600 Ray token file}"
            }
        }
    example = files[".env.example"]
    assert "RAY_TOKEN_FILE=./ray_token" in example.splitlines()
    assert "# it once on the head: (umask 077 && openssl rand -hex 32 > ray_token)" in example


# --- names and sizes, through the CLI ---------------------------------------------------

_LABEL_FIX = (
    "(use at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
)
_SUBDOMAIN_FIX = (
    "(use at most 253 lowercase letters, digits and '-' or '.', starting and ending with a "
    "letter or digit)"
)


def _bad_name(flag: str, value: str, what: str, fix: str) -> Any:
    return pytest.param(
        [flag, value],
        f"Error: {flag}: {show(value)} is not a valid {what} {fix}",
        id=f"{flag}-{value[:20]!r}",
    )


NS = "Kubernetes namespace (a DNS-1123 label)"
SUB = "Kubernetes name (a DNS-1123 subdomain)"
BAD_K8S_FLAGS = [
    *[
        _bad_name("--namespace", v, NS, _LABEL_FIX)
        for v in ["Bad_NS", "-ns", "ns-", "ns.dots", "a" * 64, "ns $(X)", "", "ns'", 'ns"x']
    ],
    pytest.param(
        ["--namespace", "ns\nkind: Pod"],
        "Error: --namespace: 'ns\\nkind: Pod' has a control character (U+000A) " + FIX_CONTROL,
        id="namespace-newline",
    ),
    *[
        _bad_name(flag, v, SUB, _SUBDOMAIN_FIX)
        for flag in ("--api-key-secret", "--ray-token-secret", "--cache-pvc")
        for v in ["Bad Secret", "-s", "s.", "s..t", "a" * 254, "$(X)", "${X}", "s'"]
    ],
    pytest.param(
        ["--ray-token-secret", "s\nx"],
        "Error: --ray-token-secret: 's\\nx' has a control character (U+000A) " + FIX_CONTROL,
        id="ray-token-secret-newline",
    ),
    *[
        pytest.param(
            ["--name", v],
            f"Error: --name: {v!r} is not a valid Kubernetes name (a DNS-1035 label) (use at "
            "most 40 lowercase letters, digits and '-', starting with a letter, starting and "
            "ending with a letter or digit)",
            id=f"name-{v[:20]!r}",
        )
        for v in ["Small", "7b", "x" * 41, "a-", "a.b", "a_b", "-a"]
    ],
    pytest.param(
        ["--image", "img:1 --privileged"],
        "Error: --image: 'img:1 --privileged' is not an image reference (write "
        "REGISTRY/REPO:TAG, e.g. registry.example/vllm-hpc:0.1.0)",
        id="image-space",
    ),
    pytest.param(
        ["--image", "$(X)"], "Error: --image: '$(X)' is not an image reference", id="image-$"
    ),
    pytest.param(
        ["--image", "-img"], "Error: --image: '-img' is not an image reference", id="image-dash"
    ),
    pytest.param(
        ["--image", "img\n"],
        "Error: --image: 'img\\n' has a control character (U+000A)",
        id="image-newline",
    ),
    pytest.param(
        ["--shm-size", "lots"],
        "Error: --shm-size: 'lots' is not a Kubernetes quantity (write e.g. 16Gi or 200G)",
        id="shm-size",
    ),
    pytest.param(
        ["--cache-size", "200Gi\n"],
        "Error: --cache-size: '200Gi\\n' has a control character (U+000A)",
        id="cache-size-newline",
    ),
    pytest.param(
        ["--cache-size", "$(X)"],
        "Error: --cache-size: '$(X)' is not a Kubernetes quantity",
        id="cache-size-$",
    ),
]


@pytest.mark.parametrize(("args", "expected"), BAD_K8S_FLAGS)
def test_bad_k8s_flags_exit_2(args: list[str], expected: str) -> None:
    code, out, err = run(["render", "k8s", "-m", SMALL, *args])
    assert_one_clear_line(code, out, err, expected)


def test_bad_env_secret_flag_exit_2(tmp_path: Path) -> None:
    registry = tmp_path / "models.yaml"
    registry.write_text(
        "models:\n  hf:\n    model: org/hf\n    env:\n      HF_TOKEN: hf_SECRETVALUE\n"
    )
    env = {"VLLM_HPC_REGISTRY": str(registry)}
    code, out, err = run(["render", "k8s", "-m", "hf", "--env-secret", "Team_HF"], env)
    assert_one_clear_line(
        code, out, err, f"Error: --env-secret: 'Team_HF' is not a valid {SUB} {_SUBDOMAIN_FIX}"
    )


def test_valid_edge_names_render(small: LaunchPlan) -> None:
    text = render_k8s(
        small,
        namespace="a" * 63,
        name="a" * 40,
        api_key_secret="a" * 253,
        ray_token_secret="team.ray-token.v2",  # noqa: S106
        cache_pvc="0cache",
        image="registry.example:5000/team/vllm-hpc:0.1.0@sha256:" + "0" * 64,
    )
    kinds = [d["kind"] for d in yaml.safe_load_all(text)]
    assert "LeaderWorkerSet" in kinds


BAD_COMPOSE_FLAGS = [
    pytest.param(
        ["--shm-size", "16gb; rm"],
        "Error: --shm-size: '16gb; rm' is not a size (write e.g. 16gb or 512m)",
        id="shm-size",
    ),
    pytest.param(
        ["--shm-size", "${X}"], "Error: --shm-size: '${X}' is not a size", id="shm-size-$"
    ),
    pytest.param(
        ["--image", "${IMAGE}"],
        "Error: --image: '${IMAGE}' is not an image reference",
        id="image-$",
    ),
    pytest.param(
        ["--image", "img\nservices:"],
        "Error: --image: 'img\\nservices:' has a control character (U+000A)",
        id="image-newline",
    ),
]


@pytest.mark.parametrize(("args", "expected"), BAD_COMPOSE_FLAGS)
def test_bad_compose_flags_exit_2(args: list[str], expected: str) -> None:
    code, out, err = run(["render", "compose", "-m", SMALL, *args])
    assert_one_clear_line(code, out, err, expected)


@pytest.mark.parametrize("door", ["k8s", "compose"])
@pytest.mark.parametrize("model", ["--api-key=abc/def", "org/x\ntouch PWNED #", "org/$'\r"])
def test_bad_model_exit_2(door: str, model: str) -> None:
    # The input's model check or the renderer's stops it (the message is the first
    # check's): one line, exit 2, nothing rendered.
    code, out, err = run(["render", door, "-m", model])
    assert_one_clear_line(code, out, err, "Error: ")
    assert "model" in err


# --- the CLI: where the secrets went, and OS errors ---------------------------------------


def test_cli_says_where_secret_env_went(tmp_path: Path) -> None:
    registry = tmp_path / "models.yaml"
    registry.write_text(
        "models:\n  hf:\n    model: org/hf\n    env:\n      HF_TOKEN: hf_SECRETVALUE\n"
        "      NCCL_DEBUG: INFO\n"
    )
    env = {"VLLM_HPC_REGISTRY": str(registry)}
    code, out, err = run(["render", "k8s", "-m", "hf", "--namespace", "llm"], env)
    assert code == 0, err
    assert "SECRETVALUE" not in out + err
    assert (
        "secret env HF_TOKEN: read from Secret vllm-hf-env (secretKeyRef), values not "
        "written; the header says how to create it"
    ) in err.splitlines()
    code, out, err = run(["render", "compose", "-m", "hf", "-o", str(tmp_path / "c")], env)
    assert code == 0, err
    assert (
        "secret env HF_TOKEN: read from secret.env beside the compose files (keep it "
        "0600), values not written"
    ) in err.splitlines()
    for path in (tmp_path / "c").iterdir():
        assert "SECRETVALUE" not in path.read_text()


def test_cli_output_errors_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing" / "x.yaml"
    code, out, err = run(["render", "k8s", "-m", SMALL, "-o", str(missing)])
    assert_one_clear_line(
        code,
        out,
        err,
        f"Error: --output: cannot write {missing}: No such file or directory "
        "(choose a writable path)",
    )
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    link = tmp_path / "planted.yaml"
    link.symlink_to(victim)
    code, out, err = run(["render", "k8s", "-m", SMALL, "-o", str(link)])
    assert_one_clear_line(
        code,
        out,
        err,
        f"Error: --output: {link} is a symlink (remove it, or write to another path)",
    )
    assert victim.read_text() == "keep me\n"
    afile = tmp_path / "afile"
    afile.write_text("")
    code, out, err = run(["render", "compose", "-m", SMALL, "-o", str(afile / "d")])
    assert_one_clear_line(
        code, out, err, f"Error: --output-dir: cannot create {afile / 'd'}: Not a directory"
    )
