"""Configuration: bad values stop start-up with the dotted key and the problem; secrets stay hidden."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sipagent.config import ConfigError, Settings, build_settings, load_settings


def _error(tmp_path: Path, text: str, **overrides: object) -> str:
    path = tmp_path / "sipagent.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load_settings(path, dict(overrides))
    return str(exc.value)


def test_bad_values_name_their_keys(tmp_path: Path) -> None:
    message = _error(
        tmp_path, '[sip]\nport = 70000\nbind = "not-an-ip"\n[rtp]\nport_min = 20000\nport_max = 10000\n'
    )
    assert "sip.port" in message and "65535" in message
    assert "sip.bind" in message and "not an IP address" in message
    assert "rtp" in message and "port_max must be greater than port_min" in message


def test_unknown_keys_and_bad_uris_are_reported(tmp_path: Path) -> None:
    message = _error(tmp_path, '[sip]\nprot = 5060\n[trunk]\nuri = "http://example.com"\n')
    assert "sip.prot" in message and "Extra inputs are not permitted" in message
    assert "trunk.uri" in message and "not a SIP URI" in message


def test_tls_needs_certificate_and_register_needs_user(tmp_path: Path) -> None:
    message = _error(
        tmp_path, '[sip]\ntransports = ["tls"]\n[trunk]\nmode = "register"\nuri = "sip:pbx.example"\n'
    )
    assert "needs tls_cert and tls_key" in message
    assert "register mode needs username" in message


def test_inference_settings_are_checked_against_this_machine(tmp_path: Path) -> None:
    message = _error(tmp_path, '[agent]\ninference = "gpu"\ninference_cpus = [4096]\n')
    assert "agent.inference" in message and "'process' or 'threads'" in message
    message = _error(tmp_path, "[agent]\ninference_cpus = [4096]\n")
    assert "inference_cpus: CPU 4096 is not available here" in message
    message = _error(tmp_path, '[agent]\ninference = "threads"\ninference_cpus = [0]\n')
    assert 'inference_cpus needs inference = "process"' in message
    assert "inference_sched" in _error(tmp_path, '[agent]\ninference_sched = "realtime"\n')


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
    assert "not valid TOML" in _error(tmp_path, "[sip\n")


def test_password_never_printed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "sipagent.toml"
    path.write_text('[trunk]\nuri = "sip:pbx.example"\nusername = "u"\npassword = "hunter2-secret"\n')
    settings = load_settings(path)
    assert settings.trunk is not None
    assert "hunter2-secret" not in repr(settings) and "hunter2-secret" not in str(settings)
    assert settings.trunk.resolved_password() == "hunter2-secret"
    monkeypatch.setenv("TRUNK_PW", "from-env")
    path.write_text('[trunk]\nuri = "sip:pbx.example"\nusername = "u"\npassword_env = "TRUNK_PW"\n')
    trunk = load_settings(path).trunk
    assert trunk is not None and trunk.resolved_password() == "from-env"


def test_cli_reports_bad_flag_value_and_exits_nonzero(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sipagent", "serve", "--sip-port", "0", "--sip-bind", "127.0.0.1"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert "sip.port" in result.stderr and "greater than or equal to 1" in result.stderr


def test_agent_mode_with_a_missing_model_names_it_and_exits(tmp_path: Path) -> None:
    config = tmp_path / "sipagent.toml"
    config.write_text(f'[stt]\nmodel = "{tmp_path / "no-such-model"}"\n')
    agent = subprocess.run(
        [sys.executable, "-m", "sipagent", "serve", "--config", str(config), "--sip-bind", "127.0.0.1",
         "--sip-port", "45999"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert agent.returncode != 0
    assert "cannot load the voice models" in agent.stderr and "no-such-model" in agent.stderr


def test_the_first_chunk_settings_reach_the_agents_chunker() -> None:
    from sipagent.config import build_settings
    from sipagent.layers import conversation_config
    from sipagent.voice.chunker import SentenceChunker

    longer = {"agent": {"first_chunk_min_words": 3, "first_chunk_max_chars": 28}}
    config = conversation_config(build_settings(longer))
    assert (config.chunker.first_min_words, config.chunker.first_max_chars) == (3, 28)
    first = SentenceChunker(config.chunker).feed("Thanks for calling the card shop today. ")[0]
    assert 16 < len(first) <= 28 and first.startswith("Thanks for calling")
    default = conversation_config(build_settings({})).chunker
    assert (default.first_min_words, default.first_max_chars) == (2, 16)  # two or three words


def test_a_remote_llm_server_is_announced_at_start_up(caplog: pytest.LogCaptureFixture) -> None:
    from sipagent.layers import warn_if_text_leaves

    def llm(base_url: str) -> Settings:
        return build_settings({"llm": {"backend": "openai", "openai": {"base_url": base_url, "model": "m"}}})

    assert not warn_if_text_leaves(build_settings({}))
    assert not warn_if_text_leaves(llm("http://127.0.0.1:8000/v1"))
    assert not warn_if_text_leaves(llm("http://localhost:8000/v1"))
    with caplog.at_level("WARNING"):
        assert warn_if_text_leaves(llm("https://gpu-box.example.com/v1"))
    assert "gpu-box.example.com" in caplog.text and "transcripts" in caplog.text
