"""orca.logging_setup and the `[log]` / `[agent.log]` config tables: precedence (flag > environment > file),
text and JSON lines, access loggers off unless asked for, and secrets masked whatever the message."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orca import auth, logging_setup
from orca.config import ConfigError, LogSettings, load_agent_config, load_master_config
from orca.logging_setup import API_ACCESS_LOGGER, PROXY_ACCESS_LOGGER, configure, redact, resolve


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    levels = {n: logging.getLogger(n).level for n in (API_ACCESS_LOGGER, PROXY_ACCESS_LOGGER, "pysyncobj")}
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)
    for n, lv in levels.items():
        logging.getLogger(n).setLevel(lv)


def test_flags_beat_environment_beat_file() -> None:
    base = LogSettings(level="warning", format="json", access_log=True)
    assert resolve(base, environ={}) == base
    env = {"ORCA_LOG_LEVEL": "DEBUG", "ORCA_LOG_FORMAT": "text", "ORCA_ACCESS_LOG": "0"}
    assert resolve(base, environ=env) == LogSettings(level="debug", format="text", access_log=False)
    assert resolve(base, level="error", fmt="json", access_log=True, environ=env) == \
        LogSettings(level="error", format="json", access_log=True)


@pytest.mark.parametrize(("kwargs", "env", "needle"), [
    ({"level": "loud"}, {}, "--log-level"), ({"fmt": "xml"}, {}, "--log-format"),
    ({}, {"ORCA_LOG_LEVEL": "trace"}, "ORCA_LOG_LEVEL"), ({}, {"ORCA_LOG_FORMAT": "yaml"}, "ORCA_LOG_FORMAT"),
    ({}, {"ORCA_ACCESS_LOG": "maybe"}, "ORCA_ACCESS_LOG")])
def test_bad_settings_name_their_source(kwargs: dict[str, str], env: dict[str, str], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        resolve(LogSettings(), environ=env, **kwargs)  # type: ignore[arg-type]


def test_text_lines_keep_their_shape(restore_logging: None) -> None:
    out = io.StringIO()
    configure(LogSettings(), "master-1", out)
    logging.getLogger("orca.test").info("hello %s", "world")
    logging.getLogger("orca.test").debug("not shown at info")
    line = out.getvalue().strip()
    assert line.endswith(" master-1 INFO orca.test: hello world") and "\n" not in line


def test_json_lines_parse_and_carry_the_node(restore_logging: None) -> None:
    out = io.StringIO()
    configure(LogSettings(level="debug", format="json"), "worker-1", out)
    logging.getLogger("orca.test").debug("step %d", 3)
    try:
        raise RuntimeError("boom with Bearer abc.def.ghi")
    except RuntimeError:
        logging.getLogger("orca.test").exception("failed")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "step 3" and first["level"] == "DEBUG" and first["node"] == "worker-1"
    assert first["logger"] == "orca.test" and first["time"]
    assert "RuntimeError" in second["exc_info"] and "abc.def.ghi" not in second["exc_info"]


def test_access_loggers_are_off_unless_asked_for(restore_logging: None) -> None:
    out = io.StringIO()
    configure(LogSettings(level="debug"), "m", out)
    logging.getLogger(API_ACCESS_LOGGER).info("GET /x")
    logging.getLogger(PROXY_ACCESS_LOGGER).info("GET /y")
    assert out.getvalue() == ""
    configure(LogSettings(level="warning", access_log=True, proxy_access_log=True), "m", out)
    logging.getLogger(API_ACCESS_LOGGER).info("GET /x")
    logging.getLogger(PROXY_ACCESS_LOGGER).info("GET /y")
    assert "GET /x" in out.getvalue() and "GET /y" in out.getvalue()


def test_real_tokens_are_masked(restore_logging: None) -> None:
    key = auth.signing_key(auth.generate_cluster_secret().encode())
    token = auth.mint_token(key, role="viewer", name="prometheus", now=1_800_000_000.0)[0]
    out = io.StringIO()
    configure(LogSettings(), "m", out)
    log = logging.getLogger("orca.test")
    log.warning("header was %s", f"Authorization: Bearer {token}")
    log.warning("token %s in a message", token)
    log.warning("join with ORCAJOIN-2-abcdef.ghijk and bearer=%s", "x")
    text = out.getvalue()
    assert token not in text and "ORCAJOIN-2-abcdef" not in text and text.count("[redacted]") == 3


@given(st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="\"',;"),
               min_size=8, max_size=80), st.text(max_size=40), st.text(max_size=40))
def test_a_bearer_value_never_survives(value: str, before: str, after: str) -> None:
    text = redact(f"{before} Authorization: Bearer {value} {after}")
    assert f"Bearer {value}" not in text


def test_log_tables_in_config_files(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("x" * 32)
    base = (f'[node]\nid = "m1"\ndata_dir = "{tmp_path}/d"\n[api]\nlisten = "127.0.0.1:1"\n'
            f'[raft]\nlisten = "127.0.0.1:2"\npeers = []\n[security]\ncluster_secret_file = "{secret}"\n')
    conf = tmp_path / "m.toml"
    conf.write_text(base)
    assert load_master_config(conf).log == LogSettings()
    conf.write_text(base + '[log]\nlevel = "DEBUG"\nformat = "json"\naccess_log = true\n')
    assert load_master_config(conf).log == LogSettings(level="debug", format="json", access_log=True)
    for bad, key in (('level = "loud"', "log.level"), ('format = "xml"', "log.format"),
                     ("proxy_access_log = true", "proxy_access_log")):
        conf.write_text(base + f"[log]\n{bad}\n")
        with pytest.raises(ConfigError, match=key):
            load_master_config(conf)
    token = tmp_path / "t"
    token.write_text("join-token\n")
    agent = (f'[agent]\nid = "w1"\nmasters = ["http://127.0.0.1:1"]\ntoken_file = "{token}"\n'
             f'data_dir = "{tmp_path}/a"\nmetrics_require_token = true\n'
             '[agent.log]\nproxy_access_log = true\nformat = "json"\n')
    conf.write_text(agent)
    cfg = load_agent_config(conf)
    assert cfg.metrics_require_token and cfg.log == LogSettings(format="json", proxy_access_log=True)


def test_the_module_lists_what_it_offers() -> None:
    assert logging_setup.LEVELS == ("debug", "info", "warning", "error") and logging_setup.FORMATS == ("text", "json")
