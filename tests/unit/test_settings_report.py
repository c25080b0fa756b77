"""``check-config``'s parts: the variables derived from ``Settings`` (and that ``load_settings``
reads exactly those), unknown-variable warnings, and masking."""

from __future__ import annotations

import inspect
import re

from liveboard import config
from liveboard.config import Settings, load_settings, setting_defaults
from liveboard.settings_report import (
    effective_settings,
    mask_url_password,
    render,
    settings_help,
    unknown_variable_warnings,
)


def test_the_derived_variables_are_exactly_those_config_reads() -> None:
    """Every whole ``"LIVEBOARD_…"`` literal of config.py is a setting's variable (or one of
    ``OTHER_VARIABLES``), and every setting's variable is one of them."""
    read = set(re.findall(r'"(LIVEBOARD_[A-Z_]+)"', inspect.getsource(config)))
    assert read - config.OTHER_VARIABLES == set(setting_defaults())


def test_defaults_match_what_load_settings_gives_for_an_empty_environment() -> None:
    loaded = load_settings({})
    for variable, default in setting_defaults().items():
        assert getattr(loaded, variable.removeprefix("LIVEBOARD_").lower()) == default, variable


def test_unknown_variables_are_found_and_a_near_name_suggested() -> None:
    env = {
        "LIVEBOARD_DB_POOLSIZE": "3",
        "LIVEBOARD_PORT": "9000",
        "LIVEBOARD_TOKEN": "the SDK's",
        "LIVEBOARD_WHATEVER": "x",
        "PATH": "/bin",
    }
    unknown = config.unknown_variables(env)
    assert unknown == ["LIVEBOARD_DB_POOLSIZE", "LIVEBOARD_WHATEVER"]
    assert unknown_variable_warnings(unknown) == [
        "warning: LIVEBOARD_DB_POOLSIZE is not a liveboard setting"
        " (did you mean LIVEBOARD_DB_POOL_SIZE?); it is ignored",
        "warning: LIVEBOARD_WHATEVER is not a liveboard setting; it is ignored",
    ]


def test_url_passwords_are_masked() -> None:
    assert mask_url_password("postgresql://app:s%40cret@db:5432/lb?sslmode=require") == (
        "postgresql://app:***@db:5432/lb?sslmode=require"
    )
    assert mask_url_password("redis://:pw@cache:6379/0") == "redis://:***@cache:6379/0"
    assert mask_url_password("postgresql://app@db/lb") == "postgresql://app@db/lb"
    assert mask_url_password("https://idp.example/jwks.json") == "https://idp.example/jwks.json"
    assert mask_url_password("not a url @ all") == "not a url @ all"


def test_secrets_and_values_render() -> None:
    assert render("jwt_secret", "abc") == "***"
    assert render("jwt_secret", None) == ""
    assert render("otel_api_key", "k") == "***"
    pem = "-----BEGIN PUBLIC KEY-----\nAAA\n-----END PUBLIC KEY-----"
    assert render("jwt_public_key", pem) == "-----BEGIN PUBLIC KEY----- … (3 lines)"
    assert render("redis_required", True) == "1"
    assert render("allowed_origins", ("https://a", "https://b")) == "https://a,https://b"
    assert render("db_wait", 30.0) == "30"
    assert render("db_wait", 2.5) == "2.5"


def test_effective_settings_mark_defaults_and_mask() -> None:
    settings = Settings(database_url="postgresql://app:pw@db/lb", jwt_secret="s" * 40, port=9000)
    lines = effective_settings(settings)
    assert "LIVEBOARD_DATABASE_URL=postgresql://app:***@db/lb" in lines
    assert "LIVEBOARD_JWT_SECRET=***" in lines
    assert "LIVEBOARD_PORT=9000" in lines
    assert "LIVEBOARD_DB_POOL_SIZE=10  # default" in lines
    assert len(lines) == len(setting_defaults())
    assert not any("pw" in line or "s" * 40 in line for line in lines)


def test_the_help_lists_every_variable() -> None:
    text = settings_help()
    for variable in setting_defaults():
        assert variable in text
