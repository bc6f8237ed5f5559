"""API keys never read as flags nor show whole; the CPU torch requirement picks its index."""

from __future__ import annotations

from servekit import envs
from servekit.server import _redact, mask_key, new_api_key


def test_new_keys_are_random_and_never_look_like_flags():
    keys = {new_api_key() for _ in range(200)}
    assert len(keys) == 200
    assert all(k.startswith("sk-") and len(k) >= 32 for k in keys)


def test_commands_are_logged_with_the_key_masked_in_every_spelling():
    key = new_api_key()
    logged = _redact(["server", "--api-key", key, f"--api-key={key}", "--port", "80"], key)
    assert key not in " ".join(logged)
    assert logged[2] == mask_key(key) and logged[3] == f"--api-key={mask_key(key)}"
    assert _redact(["a", "b"], None) == ["a", "b"]


def test_cpu_torch_index_is_chosen_by_the_environment_variable(monkeypatch):
    monkeypatch.setenv("SERVEKIT_TORCH_INDEX_URL", "https://example.invalid/cpu")
    assert envs.cpu_torch_requirements("2.13.0") == ["torch==2.13.0+cpu", "--extra-index-url",
                                                      "https://example.invalid/cpu"]
    monkeypatch.setenv("SERVEKIT_TORCH_INDEX_URL", "")
    assert envs.cpu_torch_requirements("2.13.0") == ["torch==2.13.0+cpu"]


def test_cpu_torch_index_is_added_only_when_pip_cannot_find_the_wheel(monkeypatch):
    monkeypatch.delenv("SERVEKIT_TORCH_INDEX_URL", raising=False)
    monkeypatch.setattr(envs, "_pip_finds", lambda requirement: False)
    assert envs.cpu_torch_requirements("2.13.0")[1:] == ["--extra-index-url", envs.TORCH_CPU_INDEX]
    monkeypatch.setattr(envs, "_pip_finds", lambda requirement: requirement == "torch==2.13.0+cpu")
    assert envs.cpu_torch_requirements("2.13.0") == ["torch==2.13.0+cpu"]
