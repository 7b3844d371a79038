"""The QATTrainer executor on real artifacts: a layer tfmot cannot quantize stops it early."""
import os

import pytest
from tfx.types import standard_artifacts
import tf_keras

from components import QATTrainer
from components import errors
from components.qat_trainer.qat import QATConfig
from tests.helpers import INPUT_FN
from tests.helpers import TINY
from tests.helpers import channel
from tests.helpers import keras_model_artifact
from tests.helpers import run_optimizer


def test_unsupported_layer_names_the_layer_before_training(digits_examples, tmp_path):
  inputs = tf_keras.Input((64,), name='pixels')
  x = tf_keras.layers.LayerNormalization(name='norm')(tf_keras.layers.Dense(16)(inputs))
  model = tf_keras.Model(inputs, tf_keras.layers.Dense(10, activation='softmax')(x))
  source = keras_model_artifact(model, tmp_path / 'source')
  qat_trainer = QATTrainer(model=channel(), examples=channel(standard_artifacts.Examples),
                           input_fn=INPUT_FN, fine_tuning=TINY, qat=QATConfig(scheme='default'))

  with pytest.raises(errors.ConfigError, match="QAT: layer 'norm' of type LayerNormalization "
                     'cannot be quantized'):
    run_optimizer(qat_trainer, source, digits_examples, tmp_path / 'qat')

  assert not os.path.exists(tmp_path / 'qat' / 'run')
  assert not os.path.exists(tmp_path / 'qat' / 'model')
