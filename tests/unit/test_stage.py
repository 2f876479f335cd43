"""``vllm-hpc stage`` against a hub on loopback (``helpers.fakehub``: the routes
huggingface_hub uses): a model staged and verified, a dry run that downloads nothing,
a gated model without a token, a shard served cut short, a stage cut off and resumed,
the token (read from a 0600 file, sent to the hub, found nowhere else), and the copy's
config and tokenizer loaded offline in the nodes' Python (a stand-in Transformers,
``helpers.faketransformers``)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from launchers.jobdir.modelstore import staged_copy, staged_dir
from launchers.stage.run import check_tokenizer

from .conftest import assert_one_clear_line
from .helpers.cli import run
from .helpers.fakehub import Hub, Repo, serve
from .helpers.faketransformers import (
    TOKENIZER_CONFIG_JSON,
    TOKENIZER_JSON,
    calls,
    python_with_transformers,
)

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SHARDS = {"model-00001-of-00002.safetensors": b"\x01" * 3000,
          "model-00002-of-00002.safetensors": b"\x02" * 2000}  # fmt: skip
INDEX = json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                   "b": "model-00002-of-00002.safetensors"}}).encode()  # fmt: skip
FILES = {
    "config.json": b'{"model_type": "llama"}',
    "generation_config.json": b"{}",
    "tokenizer.json": TOKENIZER_JSON,
    "tokenizer_config.json": TOKENIZER_CONFIG_JSON,
    "model.safetensors.index.json": INDEX,
    **SHARDS,
    "consolidated.safetensors": b"\x03" * 5000,
    "original/consolidated.00.pth": b"\x04" * 100,
    "README.md": b"# tiny",
}
STAGED = sorted(set(FILES) - {"consolidated.safetensors", "original/consolidated.00.pth",
                              "README.md"})  # fmt: skip
TOKEN = "hf_secretTOKEN0123456789"  # noqa: S105 - the test hub's


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[Hub]:
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY", "HF_ENDPOINT", "HF_TOKEN", "HF_HUB_OFFLINE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    repos = {"org/tiny": Repo(dict(FILES), commit=COMMIT),
             "org/gated": Repo(dict(FILES), commit=COMMIT, gated=True, token=TOKEN)}  # fmt: skip
    with serve(repos) as served:
        yield served


def stage(hub: Hub, store: Path, *args: str, env: dict[str, str] | None = None
          ) -> tuple[int, str, str]:  # fmt: skip
    return run(["stage", *args, "--dest", str(store), "--endpoint", hub.url], env)


def copy_of(store: Path, repo: str = "org/tiny") -> Path:
    return store / repo.replace("/", "--") / COMMIT


def test_a_model_is_staged_verified_and_recorded(hub: Hub, tmp_path: Path) -> None:
    store = tmp_path / "store"
    code, out, err = stage(hub, store, "org/tiny")
    assert code == 0, err
    copy = copy_of(store)
    assert sorted(p.name for p in copy.iterdir() if p.is_file()) == sorted(
        [*STAGED, "vllm-hpc-staged.json"]
    )
    for name in STAGED:
        assert (copy / name).read_bytes() == FILES[name]
    assert sorted(hub.gets()) == STAGED  # the duplicates were never fetched
    manifest = json.loads((copy / "vllm-hpc-staged.json").read_text())
    assert manifest["repo_id"] == "org/tiny" and manifest["commit"] == COMMIT
    assert manifest["revision"] == "main" and manifest["verified"] == "size+sha256"
    assert manifest["endpoint"] == hub.url and manifest["weights"] == "safetensors"
    sizes = {f["path"]: f["size"] for f in manifest["files"]}
    assert sizes == {name: len(FILES[name]) for name in STAGED}
    shas = {f["path"] for f in manifest["files"] if f["sha256"]}
    assert shas == set(SHARDS)
    assert (store / "org--tiny" / "refs" / "main").read_text() == COMMIT + "\n"
    assert staged_dir(str(store), "org/tiny", "main") == copy
    assert f"staged org/tiny at main (commit {COMMIT})" in out
    assert str(copy) in out and "verified: size+sha256" in out
    # The nodes' Python (/opt/venv/bin/python, the helper's) is not here, this one has no
    # Transformers: said in one line, not a failure, and recorded as not checked.
    assert manifest["tokenizer_checked"] is False
    [line] = [line for line in out.splitlines() if "tokenizer:" in line]
    assert line == (
        "  tokenizer: not checked: the nodes' Python: cannot run /opt/venv/bin/python (No such "
        f"file or directory); this Python: Transformers is not importable for {sys.executable}"
    )


def test_a_dry_run_lists_files_and_sizes_and_downloads_nothing(hub: Hub, tmp_path: Path) -> None:
    store = tmp_path / "store"
    code, out, err = stage(hub, store, "org/tiny", "--dry-run")
    assert code == 0, err
    assert hub.gets() == [] and not [s for s in hub.seen if "/resolve/" in s[1]]
    assert not store.exists()
    for name in STAGED:
        line = next(line for line in out.splitlines() if f" {name} " in f"{line} ")
        assert line.split()[0] == "fetch", line
    assert "2.9 KiB" in out  # the first shard's 3000 bytes
    assert "skip   consolidated.safetensors (consolidated copy of the same weights)" in out
    assert f"{len(STAGED)} files" in out
    code, out, _ = stage(hub, store, "org/tiny", "--dry-run", "--json")
    listed = {f["path"]: f["size"] for f in json.loads(out)["files"]}
    assert listed == {name: len(FILES[name]) for name in STAGED}


def test_a_gated_model_without_a_token_is_one_clear_line(hub: Hub, tmp_path: Path) -> None:
    store = tmp_path / "store"
    code, out, err = stage(hub, store, "org/gated")
    assert_one_clear_line(code, out, err, "Error: model org/gated is gated and no token was given")
    assert "0600 file" in err
    assert staged_dir(str(store), "org/gated", "main") is None


def test_a_shard_served_short_is_named_removed_and_nothing_is_recorded(
    hub: Hub, tmp_path: Path
) -> None:
    hub.repos["org/tiny"].serve_short["model-00002-of-00002.safetensors"] = 1500
    store = tmp_path / "store"
    code, _, err = stage(hub, store, "org/tiny")
    assert code == 1, err
    assert "model-00002-of-00002.safetensors: 1500 bytes, the hub says 2000 (truncated)" in err, err
    assert "run the same command again" in err
    assert not (copy_of(store) / "model-00002-of-00002.safetensors").exists()
    assert (copy_of(store) / "model-00001-of-00002.safetensors").exists()
    assert staged_copy(str(store), "org/tiny", "main") is None
    assert not (store / "org--tiny" / "refs").exists()


def test_a_stage_cut_off_resumes_with_only_what_is_missing(hub: Hub, tmp_path: Path) -> None:
    repo = hub.repos["org/tiny"]
    repo.refuse.add("model-00002-of-00002.safetensors")
    store = tmp_path / "store"
    code, _, err = stage(hub, store, "org/tiny")
    assert code == 1 and "HTTP 403" in err, err
    assert staged_dir(str(store), "org/tiny", "main") is None  # half a copy never counts
    repo.refuse.clear()
    hub.seen.clear()
    code, _, err = stage(hub, store, "org/tiny")
    assert code == 0, err
    assert hub.gets() == ["model-00002-of-00002.safetensors"]
    assert staged_dir(str(store), "org/tiny", "main") == copy_of(store)
    # A shard cut short on disk afterwards is fetched again by the next run.
    shard = copy_of(store) / "model-00001-of-00002.safetensors"
    shard.write_bytes(shard.read_bytes()[:100])
    hub.seen.clear()
    code, _, err = stage(hub, store, "org/tiny")
    assert code == 0, err
    assert hub.gets() == ["model-00001-of-00002.safetensors"]
    assert shard.read_bytes() == FILES["model-00001-of-00002.safetensors"]


def test_the_token_goes_to_the_hub_only(
    hub: Hub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    store = tmp_path / "store"
    seen_env: list[dict[str, str]] = []
    real_download = __import__("launchers.stage.hub", fromlist=["download"]).download

    def download(*args: object, **kwargs: object) -> None:
        seen_env.append(dict(os.environ))
        real_download(*args, **kwargs)

    monkeypatch.setattr("launchers.stage.hub.download", download)
    code, out, err = stage(hub, store, "org/gated", "--token-file", str(token_file))
    assert code == 0, err
    assert f"Bearer {TOKEN}" in hub.authorizations()
    assert seen_env and all(TOKEN not in " ".join(env.values()) for env in seen_env)
    assert TOKEN not in " ".join(sys.argv) and TOKEN not in out + err
    for path in store.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_a_token_file_others_can_read_is_refused(hub: Hub, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o644)
    code, out, err = stage(hub, tmp_path / "store", "org/gated", "--token-file", str(token_file))
    assert_one_clear_line(code, out, err, "Error: --token-file:")
    assert f"chmod 600 {token_file}" in err and TOKEN not in err
    assert hub.seen == []


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["org/tiny", "--revision", "../main"], {}, "Error: --revision: '../main' is not a"),
        (["org/tiny", "--endpoint", "https://u:p@hf.example.org"], {}, "Error: --endpoint:"),
        (["./models/tiny"], {}, "Error: model: ./models/tiny is a path on this machine"),
        (["org/a--b"], {}, "Error: model: 'org/a--b' is not a Hugging Face id"),
        (["org/tiny"], {"HF_HUB_OFFLINE": "1"}, "Error: HF_HUB_OFFLINE is set"),
        (["no-such-entry"], {}, "Error: model: unknown model 'no-such-entry'"),
    ],
)
def test_bad_input_is_one_clear_line(
    hub: Hub, tmp_path: Path, args: list[str], env: dict[str, str], expected: str
) -> None:
    code, out, err = run(["stage", *args, "--dest", str(tmp_path / "s")], env)
    assert_one_clear_line(code, out, err, expected)
    assert hub.seen == []


def test_a_registry_id_and_the_site_settings(hub: Hub, tmp_path: Path) -> None:
    site = tmp_path / "site.yaml"
    store = tmp_path / "lab-models"
    site.write_text(
        f"site:\n  model_store: {store}\n  hf_endpoint: {hub.url}/\n"
        "models:\n  tiny:\n    model: org/tiny\n"
    )
    code, out, err = run(["stage", "tiny", "--dry-run"], {"VLLM_HPC_SITE_CONFIG": str(site)})
    assert code == 0, err
    assert f"would stage org/tiny at main (commit {COMMIT}) from {hub.url}\n" in out
    assert f"into {copy_of(store)}\n" in out


def test_a_model_directory_served_as_a_repository_is_staged_whole(hub: Hub, tmp_path: Path) -> None:
    """``Repo.from_directory`` (the cluster tests serve the bed's tiny model with it):
    the directory's files as the hub lists them, hidden ones left out; staging the
    repository gives back the top-level files vLLM reads, byte for byte."""
    model = tmp_path / "model"
    (model / "original").mkdir(parents=True)
    (model / ".cache").mkdir()
    sources = {
        "config.json": b'{"model_type": "llama"}',
        "tokenizer.json": b'{"version": "1.0"}',
        "chat_template.jinja": b"{{ messages }}",
        "model.safetensors": b"\x05" * 4000,
        "original/consolidated.00.pth": b"\x06" * 10,
    }
    for name, data in sources.items():
        (model / name).write_bytes(data)
    (model / ".complete").write_text("stamp\n")
    (model / ".cache" / "x.json").write_text("{}")
    (model / "link.json").symlink_to(model / "config.json")
    repo = Repo.from_directory(model, commit=COMMIT)
    assert repo.files == sources
    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no file"):
        Repo.from_directory(tmp_path / "empty")
    hub.repos["org/dir"] = repo
    store = tmp_path / "store"
    code, _, err = stage(hub, store, "org/dir")
    assert code == 0, err
    copy = copy_of(store, "org/dir")
    top = sorted(name for name in sources if "/" not in name)
    assert sorted(hub.gets()) == top
    for name in top:
        assert (copy / name).read_bytes() == sources[name]
    assert not (copy / "original").exists() and not (copy / ".complete").exists()


@pytest.fixture
def nodes_python(tmp_path: Path) -> Path:
    """The nodes' Python, with a stand-in Transformers (this one has none)."""
    return python_with_transformers(tmp_path / "nodes")


def test_the_tokenizer_loads_offline_in_the_nodes_python_and_is_recorded(
    hub: Hub, tmp_path: Path, nodes_python: Path
) -> None:
    store = tmp_path / "store"
    env = {"VLLM_HPC_PYTHON": str(nodes_python), "HF_TOKEN": "hf_fromTheShell"}
    code, out, err = stage(hub, store, "org/tiny", env=env)
    assert code == 0, err
    copy = copy_of(store)
    loads = calls(tmp_path / "nodes")
    assert [(c["call"], c["target"]) for c in loads] == [
        ("config", str(copy)), ("tokenizer", str(copy))
    ]  # fmt: skip
    for load in loads:  # offline, and the shell's token is not handed to the child
        assert (load["HF_HUB_OFFLINE"], load["TRANSFORMERS_OFFLINE"]) == ("1", "1"), load
        assert load["HF_TOKEN"] is None, load
    manifest = json.loads((copy / "vllm-hpc-staged.json").read_text())
    assert manifest["tokenizer_checked"] is True
    assert (
        "  tokenizer: config (LlamaConfig) and tokenizer (PreTrainedTokenizerFast, 4 tokens) "
        f"load offline with Transformers 0.0.test in {nodes_python}\n"
    ) in out
    code, out, err = stage(hub, store, "org/tiny", "--json", env=env)
    assert code == 0, err
    assert json.loads(out)["tokenizer_checked"] is True


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        pytest.param(
            {"tokenizer.json": None},
            "its tokenizer does not load offline from {copy}: no tokenizer file (tokenizer.json, "
            "tokenizer.model, vocab.json, vocab.txt, *.tiktoken) (ValueError: Couldn't "
            "instantiate the backend tokenizer",
            id="no-vocabulary-file",
        ),
        pytest.param(
            {"tokenizer.json": b'{"version": "1.0"}'},
            "its tokenizer does not load offline from {copy}: tokenizer.json: Exception: data "
            "did not match any variant of untagged enum ModelWrapper",
            id="a-wrong-tokenizer-json",
        ),
        pytest.param(
            {"tokenizer.json": b'{"version": '},
            "its tokenizer does not load offline from {copy}: tokenizer.json: JSONDecodeError: ",
            id="tokenizer-json-not-json",
        ),
        pytest.param(
            {"config.json": b'{"architectures": ["X"]}'},
            "its config does not load offline from {copy}: config.json: ValueError: "
            "Unrecognized model in {copy}. Should have a `model_type` key",
            id="config-without-model-type",
        ),
    ],
)
def test_a_tokenizer_that_does_not_load_offline_fails_the_stage_in_one_line(
    hub: Hub, tmp_path: Path, nodes_python: Path, change: dict[str, bytes | None], problem: str
) -> None:
    files = hub.repos["org/tiny"].files
    for name, data in change.items():
        if data is None:
            del files[name]
        else:
            files[name] = data
    store = tmp_path / "store"
    code, out, err = stage(hub, store, "org/tiny", env={"VLLM_HPC_PYTHON": str(nodes_python)})
    copy = copy_of(store)
    assert code == 1, (out, err)
    [line] = [line for line in err.splitlines() if line.strip() and "Fetching" not in line]
    assert line.startswith("Error: model org/tiny: " + problem.format(copy=copy)), err
    assert "the copy is kept but not recorded" in err
    # Not recorded, so no job serves it; the files stay, so a second run fetches nothing.
    assert staged_copy(str(store), "org/tiny", "main") is None
    assert not (copy / "vllm-hpc-staged.json").exists()
    assert (copy / "model-00001-of-00002.safetensors").exists()


def test_this_python_is_asked_when_the_nodes_python_cannot_be(
    tmp_path: Path, nodes_python: Path, tiny_model: Callable[..., Path]
) -> None:
    """The nodes' Python is not on this machine: this one (here, the stand-in's) loads
    it, and says which one did; when neither can, one line says so and nothing fails."""
    model = tiny_model()
    (model / "tokenizer.json").write_bytes(TOKENIZER_JSON)
    env = {"VLLM_HPC_PYTHON": "/nonexistent/python"}
    found = check_tokenizer(model, env, str(nodes_python))
    assert found.status == "loaded" and found.python == str(nodes_python), found
    assert found.detail.endswith(
        "(the nodes' Python: cannot run /nonexistent/python (No such file or directory))"
    )
    none = check_tokenizer(model, env, sys.executable)
    assert none.status == "unavailable", none
    assert [c["call"] for c in calls(tmp_path / "nodes")] == ["config", "tokenizer"]
