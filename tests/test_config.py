"""Model ids and prices are configuration: environment and a TOML file, checked at start."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.config import ConfigError
from workers.models import DEFAULT_PRICES, Usage, cost_micro_usd
from workers.runtime import Runtime
from workers.settings import Settings, SettingsError

CONFIG = """
[tiers]
fast = "claude-haiku-4-5"
strong = "house-model-1"

[prices.house-model-1]
input = 1500000
output = 7000000
cache_write_5m = 1875000
cache_write_1h = 3000000
cache_read = 150000
"""


def test_defaults_are_the_current_fast_and_strong_models() -> None:
    settings = Settings.from_env({})
    assert settings.model_for("fast") == "claude-haiku-5-5"
    assert settings.model_for("strong") == "claude-sonnet-5-5"
    assert {"claude-haiku-5-5", "claude-sonnet-5-5"} <= set(settings.prices)


def test_config_file_sets_tiers_and_prices_and_environment_wins(tmp_path: Path) -> None:
    path = tmp_path / "chorus.toml"
    path.write_text(CONFIG)
    settings = Settings.from_env({"CHORUS_CONFIG": str(path), "CHORUS_MODEL_FAST": "claude-x"})

    assert settings.model_for("strong") == "house-model-1"
    assert settings.model_for("fast") == "claude-x"
    assert settings.prices["house-model-1"].output == 7_000_000
    assert settings.prices["claude-sonnet-5-5"] == DEFAULT_PRICES["claude-sonnet-5-5"]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[tiers]\nmedium = 'x'", "[tiers] 'medium'"),
        ("[prices.m]\ninput = 1.5", "input must be a non-negative integer"),
        ("[prices.m\n", "cannot read CHORUS_CONFIG"),
    ],
)
def test_bad_config_names_the_file_and_the_entry(tmp_path: Path, text: str, fragment: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"CHORUS_CONFIG": str(path)})
    assert fragment in str(caught.value)
    assert str(path) in str(caught.value)


def test_a_worker_refuses_a_model_without_a_price() -> None:
    settings = Settings.from_env({"CHORUS_MODEL_STRONG": "claude-unpriced"})
    with pytest.raises(SettingsError, match="claude-unpriced"):
        Runtime(settings)


def test_cache_tokens_are_priced_apart_and_costs_are_exact_integers() -> None:
    price = DEFAULT_PRICES["claude-sonnet-5-5"]  # $2 in, $10 out, $2.50 write, $0.10 read
    usage = Usage(
        input_tokens=1_000,
        output_tokens=100,
        cache_creation_input_tokens=2_000,
        cache_read_input_tokens=10_000,
    )
    assert cost_micro_usd(usage, price) == 2_000 + 1_000 + 5_000 + 1_000


def test_long_prompts_use_the_long_context_rates() -> None:
    price = DEFAULT_PRICES["claude-haiku-5-5"]  # $0.10 / $0.50, above 100k tokens $0.50 / $2.50
    assert cost_micro_usd(Usage(input_tokens=100_000, output_tokens=1_000), price) == 10_500
    assert cost_micro_usd(Usage(input_tokens=100_001, output_tokens=1_000), price) == 52_501
