"""components.common.config: configs travel as JSON exec properties and validate again."""
import json

import pytest

from components import Budgets
from components import DeltaPolicy
from components import FineTuneConfig
from components import MeasureSettings
from components import errors


@pytest.mark.parametrize('config', [
    FineTuneConfig(epochs=2, learning_rate=0.01, optimizer='sgd'),
    Budgets(max_p90_ms=2.5, max_size_bytes=10_000),
    MeasureSettings(threads=(1, 4), min_duration_s=0.5),
    DeltaPolicy(last_k=1, max_ratio=0.25),
])
def test_a_config_survives_the_json_round_trip(config):
  text = config.to_json()

  assert list(json.loads(text)) == sorted(json.loads(text))  # Sorted keys: stable fingerprints.
  assert type(config).from_json(text) == config


def test_from_json_validates_again():
  text = json.dumps(dict(json.loads(FineTuneConfig().to_json()), epochs=0))

  with pytest.raises(errors.ConfigError, match='epochs=0 is not accepted'):
    FineTuneConfig.from_json(text)
