"""Backend configuration (YAML with ${ENV}), the request cache key, and stage I's dedupe and quality filters."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccguard.errors import CcguardError
from ccguard.llm.config import Price, load_llm_config, resolve_spec
from ccguard.synth.llm import dedupe, parse_list, quality_problem, shingles

CONFIG = """
backends:
  writer:
    kind: openai
    model: gpt-test
    base_url: ${CCG_TEST_URL:-http://127.0.0.1:9/v1}
    api_key: ${CCG_TEST_KEY}
    helpful_only: false
    price: {prompt_per_mtok: 1.0, completion_per_mtok: 2.0}
cache_dir: /tmp/ccg-cache
"""


def test_env_substitution_defaults_and_overrides(tmp_path: Path, monkeypatch):
    p = tmp_path / "llm.yaml"
    p.write_text(CONFIG)
    monkeypatch.setenv("CCG_TEST_KEY", "sk-123")
    monkeypatch.delenv("CCG_TEST_URL", raising=False)
    cfg = load_llm_config(p)
    w = cfg.backends["writer"]
    assert w.api_key == "sk-123" and w.base_url == "http://127.0.0.1:9/v1"
    assert "api_key" not in w.public()
    spec = resolve_spec("writer", config=cfg, model="other", helpful_only=True)
    assert spec.model == "other" and spec.helpful_only and spec.price.cost(1_000_000, 500_000) == pytest.approx(2.0)
    assert resolve_spec("local").model == "smollm2"


def test_config_errors_name_the_variable_the_field_and_the_file(tmp_path: Path, monkeypatch):
    p = tmp_path / "llm.yaml"
    p.write_text(CONFIG)
    monkeypatch.delenv("CCG_TEST_KEY", raising=False)
    with pytest.raises(CcguardError, match=r"CCG_TEST_KEY is not set \(used by backends\.writer\.api_key\)") as e:
        load_llm_config(p)
    assert str(p) in str(e.value)
    p.write_text("backends:\n  w: {kind: openai, model: m, temprature: 3}\n")
    with pytest.raises(CcguardError, match="backends.w.temprature"):
        load_llm_config(p)
    p.write_text("backends: [\n")
    with pytest.raises(CcguardError, match="invalid YAML"):
        load_llm_config(p)
    with pytest.raises(CcguardError, match="needs a model"):
        resolve_spec("openai")
    with pytest.raises(CcguardError, match="file not found"):
        load_llm_config(tmp_path / "missing.yaml")


def test_price_cost():
    assert Price(prompt_per_mtok=3, completion_per_mtok=15).cost(2000, 1000) == pytest.approx(0.021)


def test_list_parsing_quality_filter_and_dedupe():
    reply = "Sure! Here are some:\n1. How do I bake rye bread?\n2) what's a good sourdough hydration\n- Tips for a crisp crust?"
    assert parse_list(reply) == ["How do I bake rye bread?", "what's a good sourdough hydration", "Tips for a crisp crust?"]
    assert quality_problem("I'm sorry, but I can't help with that.") == "refusal"
    assert quality_problem("How do I make [REDACTED] at home?") == "placeholder"
    assert quality_problem("hi") == "too_short"
    assert quality_problem("12345 67890 !!!! ????") == "not_text"
    assert quality_problem("Category: cooking. User request: bread") == "instruction_echo"
    assert quality_problem("How long should I proof a rye loaf?") is None
    prompt = "Write 3 new user requests. Output one request per line, numbered 1 to 3, and nothing else."
    assert quality_problem("Sure. I will output one request per line, numbered as asked", echo_of=shingles(prompt)) == "instruction_echo"
    assert quality_problem("How long should I proof a rye loaf?", echo_of=shingles(prompt)) is None
    kept, dropped = dedupe(
        ["How do I bake rye bread?", "how do i bake rye bread", "How do I bake rye bread??!", "How do I bake a rye bread?",
         "What temperature kills salmonella in chicken?"],
        existing=["Tips for a crisp crust?"],
    )
    assert kept == ["How do I bake rye bread?", "What temperature kills salmonella in chicken?"]
    assert dropped["exact_duplicate"] == 2 and dropped["near_duplicate"] == 1


def test_cli_backend_mistakes_are_one_line_errors(tmp_path: Path):
    import os
    import subprocess
    import sys

    def cli(*args: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "CCG_TEST_KEY"}
        return subprocess.run([sys.executable, "-m", "ccguard.cli", *args], capture_output=True, text=True, env=env, timeout=120)

    r = cli("generate", "--constitution", "cbrn")
    assert r.returncode == 2 and "needs --backend" in r.stderr and "Traceback" not in r.stderr
    p = tmp_path / "llm.yaml"
    p.write_text(CONFIG)
    r = cli("generate", "--backend", "writer", "--llm-config", str(p), "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "CCG_TEST_KEY is not set" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("generate", "--backend", "nosuch", "--llm-config", str(p))
    assert r.returncode == 2 and "CCG_TEST_KEY" in r.stderr  # the file is read (and fails) before the name is looked up
    r = cli("generate", "--backend", "nosuch", "--model", "m")
    assert r.returncode == 2 and "unknown backend 'nosuch'" in r.stderr


def test_eval_judge_is_a_kind_spec_or_a_configured_backend(tmp_path: Path, monkeypatch):
    from ccguard.cli.eval import _judge

    p = tmp_path / "llm.yaml"
    p.write_text(CONFIG)
    monkeypatch.setenv("CCG_TEST_KEY", "sk-123")
    j = _judge("writer", p)
    assert (j.spec.kind, j.spec.model, j.spec.base_url) == ("openai", "gpt-test", "http://127.0.0.1:9/v1")
    j = _judge("openai:m1@http://127.0.0.1:7/v1", None)
    assert (j.spec.model, j.spec.base_url) == ("m1", "http://127.0.0.1:7/v1")
    with pytest.raises(CcguardError, match="backend name from --llm-config"):
        _judge("writer", None)
    with pytest.raises(CcguardError, match="no backend 'nosuch'"):
        _judge("nosuch", p)
