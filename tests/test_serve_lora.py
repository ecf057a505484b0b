"""vLLM's dynamic LoRA routes on `babeltune serve --enable-lora`, and the endpoint client that an
experiment uses to serve each condition's adapter (`adapter_endpoint`), over loopback. Also many
requests in flight against one server."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from babeltune.generate import (
    DecodingSettings,
    EndpointBackend,
    EndpointConfig,
    EndpointError,
    GenerationRequest,
    GenerationResult,
    GenerationRow,
    LocalBackend,
    adapter_endpoint,
    adapter_name,
    load_lora_adapter,
    read_generations,
    run_generation,
    unload_lora_adapter,
)
from babeltune.generate.server import ChatServer
from babeltune.testing import tiny_adapter
from tests.loopback import serving
from tests.test_generate_runner import make_records

SETTINGS = DecodingSettings(max_new_tokens=6)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny base model, two adapters of it, and an adapter of another tiny model."""
    from babeltune.testing import tiny_model, tiny_tokenizer

    root = tmp_path_factory.mktemp("lora-models")
    tok = tiny_tokenizer()
    for name, seed in (("base", 0), ("other-base", 7)):
        tiny_model(tok, seed=seed).save_pretrained(root / name)
        tok.save_pretrained(root / name)
    return {
        "base": root / "base",
        "a1": tiny_adapter(root / "base", root / "runs" / "alpha" / "final", seed=1),
        "a2": tiny_adapter(root / "base", root / "runs" / "beta" / "final", seed=2),
        "foreign": tiny_adapter(root / "other-base", root / "foreign", seed=3),
    }


@pytest.fixture
def lora_server(models: dict[str, Path]) -> Iterator[ChatServer]:
    backend = LocalBackend.from_pretrained(models["base"], batch_size=4)
    with serving(backend, served_name="tiny", lora_base=str(models["base"])) as server:
        yield server


def _config(url: str, **kw: Any) -> EndpointConfig:
    return EndpointConfig(url=url, api_key_env="", backoff=0.01, max_retries=1, **kw)


def _post(url: str, route: str, body: Any) -> tuple[int, str]:
    req = urllib.request.Request(f"{url}/{route}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _generate(backend: Any, path: Path) -> dict[str, str | None]:
    rows = read_generations(run_generation(make_records(5), backend, SETTINGS, path).path)
    assert all(r.error is None for r in rows)
    return {r.id: r.response for r in rows}


def test_two_adapters_on_one_base_each_answer_as_the_local_backend(models: dict[str, Path], lora_server: ChatServer,
                                                                   tmp_path: Path) -> None:
    config = _config(lora_server.url, model="tiny")
    local = {key: _generate(LocalBackend.from_pretrained(models[key]), tmp_path / f"local-{key}.jsonl")
             for key in ("base", "a1", "a2")}
    assert local["a1"] != local["base"] and local["a2"] != local["a1"]  # three different models
    with adapter_endpoint(config, str(models["a1"])) as c1, adapter_endpoint(config, str(models["a2"])) as c2:
        assert c1.model == adapter_name(models["a1"]) and c1.model.startswith("alpha-") and c1.url == config.url
        listed = EndpointBackend(config).list_models()
        assert listed == ["tiny", c1.model, c2.model]
        # Requests for the three models at once: each batch holds one model only.
        answers: dict[str, dict[str, str | None]] = {}
        threads = [threading.Thread(target=lambda k=key, c=cfg: answers.__setitem__(
            k, _generate(EndpointBackend(c), tmp_path / f"remote-{k}.jsonl")))
            for key, cfg in (("a1", c1), ("a2", c2), ("base", config))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert answers == local
        rows = read_generations(tmp_path / "remote-a1.jsonl")
        assert rows[0].model["model"] == c1.model
        cards = json.loads(urllib.request.urlopen(lora_server.url + "/models", timeout=30).read())["data"]
        by_id = {c["id"]: c for c in cards}
        assert by_id[c1.model]["parent"] == "tiny" and by_id[c1.model]["root"] == str(models["a1"].resolve())
        assert by_id[c1.model]["fingerprint"] == LocalBackend.from_pretrained(models["a1"]).fingerprint
    assert EndpointBackend(config).list_models() == ["tiny"]  # both unloaded on exit
    assert _generate(EndpointBackend(config), tmp_path / "remote-base-after.jsonl") == local["base"]


def test_bad_loads_and_unloads_are_refused_with_vllms_status_codes(models: dict[str, Path],
                                                                   lora_server: ChatServer) -> None:
    url = lora_server.url
    assert _post(url, "load_lora_adapter", {"lora_name": "a1", "lora_path": str(models["a1"])})[0] == 200
    cases = [
        ({"lora_name": "x"}, 400, "lora_path"),
        ({"lora_name": "a1", "lora_path": str(models["a2"])}, 400, "already been loaded"),
        ({"lora_name": "tiny", "lora_path": str(models["a2"])}, 400, "already been loaded"),
        ({"lora_name": "x", "lora_path": str(models["base"] / "nowhere")}, 404, "No adapter found"),
        ({"lora_name": "x", "lora_path": str(models["base"])}, 404, "No adapter found"),  # a model, not an adapter
        ({"lora_name": "x", "lora_path": str(models["foreign"])}, 400, "other-base"),  # another base
    ]
    for body, status, fragment in cases:
        got, text = _post(url, "load_lora_adapter", body)
        assert got == status, (body, text)
        assert fragment in json.loads(text)["error"]["message"], text
    got, text = _post(url, "load_lora_adapter", {"lora_name": "x", "lora_path": str(models["foreign"])})
    message = json.loads(text)["error"]["message"]
    assert str(models["base"]) in message and "fingerprint" in message  # names what differs
    assert _post(url, "unload_lora_adapter", {"lora_name": "nope"})[0] == 404
    assert _post(url, "unload_lora_adapter", {})[0] == 400
    assert _post(url, "unload_lora_adapter", {"lora_name": "a1"}) == (
        200, "Success: LoRA adapter 'a1' removed successfully.")
    assert _post(url, "unload_lora_adapter", {"lora_name": "a1"})[0] == 404
    status, text = _post(url, "chat/completions", {"model": "a1", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 400 and "unknown model 'a1'" in text
    # The client names the endpoint and the adapter.
    with pytest.raises(EndpointError, match=rf"{url}: cannot load adapter .*foreign as 'f'.*HTTP 400"):
        load_lora_adapter(_config(url), "f", models["foreign"])
    with pytest.raises(EndpointError, match=rf"{url}: cannot unload adapter 'f': HTTP 404"):
        unload_lora_adapter(_config(url), "f")


def test_routes_are_off_without_enable_lora(models: dict[str, Path]) -> None:
    backend = LocalBackend.from_pretrained(models["base"], batch_size=2)
    with serving(backend, served_name="tiny") as server:
        status, text = _post(server.url, "load_lora_adapter", {"lora_name": "a", "lora_path": str(models["a1"])})
        assert status == 404 and "--enable-lora" in text
        with pytest.raises(EndpointError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"), \
                adapter_endpoint(_config(server.url), str(models["a1"])):
            pass


def test_adapter_endpoint_unloads_on_error_and_passes_base_models_through(models: dict[str, Path],
                                                                          lora_server: ChatServer) -> None:
    config = _config(lora_server.url)
    with adapter_endpoint(config, "gemma-3-270m") as same:  # a model by name: the server's own
        assert same is config
    with adapter_endpoint(config, str(models["base"])) as same:  # the served full model itself
        assert same is config
    with pytest.raises(EndpointError, match="not the full model"), \
            adapter_endpoint(config, str(models["foreign"].parent / "other-base")):
        pass
    with pytest.raises(RuntimeError, match="stage failed"), adapter_endpoint(config, str(models["a2"])) as c2:
        assert c2.model in EndpointBackend(config).list_models()
        raise RuntimeError("stage failed")
    assert EndpointBackend(config).list_models() == ["tiny"]
    # An adapter already loaded under its name (by another process) is used and left loaded.
    name = adapter_name(models["a1"])
    load_lora_adapter(config, name, models["a1"])
    with adapter_endpoint(config, str(models["a1"])) as c1:
        assert c1.model == name
    assert name in EndpointBackend(config).list_models()
    assert adapter_name(models["a1"]) == name != adapter_name(models["a2"])


def test_enable_lora_refuses_an_adapter_as_the_served_model(models: dict[str, Path],
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from babeltune.cli import main

    assert main(["serve", "--model", str(models["a1"]), "--enable-lora", "--port", "0"]) == 2
    assert "is a PEFT adapter; serve its base model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    help_text = capsys.readouterr().out
    assert "--enable-lora" in help_text and "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in help_text


class _Slow:
    """A backend that takes a moment per batch and records batch sizes: many requests in flight arrive
    at the server together."""

    name = "slow"
    batch_size = 1024
    fingerprint = "slow"
    model_name = "slow"

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def generate(self, requests: Sequence[GenerationRequest], settings: DecodingSettings) -> Iterator[GenerationResult]:
        self.sizes.append(len(requests))
        time.sleep(0.2)
        for r in requests:
            yield GenerationResult(r.id, f"echo {r.messages[-1].content}", "stop", 3, 2)


def test_hundreds_of_requests_in_flight(tmp_path: Path) -> None:
    backend = _Slow()
    server = ChatServer(("127.0.0.1", 0), backend, served_name="slow", token=None, wait_s=0.3)  # type: ignore[arg-type]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        client = EndpointBackend(_config(server.url, concurrency=256, timeout=60))
        requests = [GenerationRequest(f"r{i}", (make_records(1)[0].messages[0],)) for i in range(600)]
        started = time.monotonic()
        results = list(client.generate(requests, SETTINGS))
        seconds = time.monotonic() - started
    finally:
        server.shutdown()
        server.server_close()
    assert sorted(r.id for r in results) == sorted(r.id for r in requests)
    assert all(r.error is None and r.text and r.text.startswith("echo ") for r in results)
    assert max(backend.sizes) >= 128, backend.sizes  # the server saw well over a hundred at once
    assert seconds < 30


@pytest.mark.integration
def test_babeltune_serve_enable_lora_on_the_default_model(tmp_path: Path) -> None:
    """`babeltune serve --enable-lora` as a process on the default model: an adapter loaded over HTTP
    answers as the local backend with that adapter (greedy, float32)."""
    import os
    import subprocess
    import sys

    from babeltune.models.loading import default_model_dir

    adapter = tiny_adapter(default_model_dir(), tmp_path / "tuned" / "final", seed=4, scale=0.002)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "babeltune.cli", "serve", "--model", "gemma-3-270m", "--port", "0",
                             "--enable-lora", "--batch-size", "4"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "LoRA adapters loadable" in line, line + (proc.stderr.read() if proc.stderr else "")
        url = line.split(" at ")[1].split(" ")[0]
        config = _config(url, model="gemma-3-270m", timeout=300)
        records = make_records(3)
        settings = DecodingSettings(max_new_tokens=8)
        with adapter_endpoint(config, str(adapter)) as tuned:
            assert tuned.model.startswith("tuned-")
            remote = read_generations(run_generation(records, EndpointBackend(tuned), settings,
                                                     tmp_path / "remote.jsonl").path)
        assert EndpointBackend(config).list_models() == ["gemma-3-270m"]
        base = read_generations(run_generation(records, EndpointBackend(config), settings,
                                               tmp_path / "base.jsonl").path)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    local = read_generations(run_generation(records, LocalBackend.from_pretrained(adapter), settings,
                                            tmp_path / "local.jsonl").path)
    def answers(rows: list[GenerationRow]) -> dict[str, str | None]:
        return {r.id: r.response for r in rows}

    assert answers(remote) == answers(local)
    assert answers(local) != answers(base)  # the adapter matters
