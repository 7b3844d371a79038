"""DepthwiseConv2D kernels clustered on a small MobileNet-style model, through to int8 TFLite."""
import json

import numpy as np
import pytest
from tfx.types import standard_artifacts
import tf_keras

from components import Clusterer
from components import spec_keys
from components.clusterer import clustering
from components.common import model_io
from tests.helpers import INPUT_FN
from tests.helpers import TINY
from tests.helpers import channel
from tests.helpers import fit_briefly
from tests.helpers import keras_model_artifact
from tests.helpers import run_optimizer
from tests.helpers import run_ptq
from tests.pruner.test_depthwise import DEPTHWISE
from tests.pruner.test_depthwise import _depthwise_weights
from tests.pruner.test_depthwise import mobilenet_style


def test_a_clustered_depthwise_kernel_has_at_most_k_values_and_skips_are_honoured():
  config = clustering.ClusteringConfig(number_of_clusters=4, skip_layers='^dw_2$')
  model = fit_briefly(mobilenet_style())
  layers, too_small = clustering.clusterable_layers(model, config)

  stripped = clustering.strip(fit_briefly(clustering.cluster(model, config, False)))

  assert 'dw_1' in layers and 'dw_2' not in layers and too_small == {}
  assert not any(name.endswith('_bn') for name in layers)  # No kernel to cluster there.
  unique = clustering.unique_weights(stripped, layers)
  assert 1 < unique['dw_1'] <= 4, unique
  assert np.unique(stripped.get_layer('dw_2').get_weights()[0]).size > 4
  assert type(stripped.get_layer('dw_1')) is tf_keras.layers.DepthwiseConv2D


@pytest.mark.e2e  # Fine-tunes and converts: 30-60 s on 2 busy cores.
def test_clusterer_records_depthwise_unique_values_and_converts_to_int8(digits_examples,
                                                                       tmp_path):
  model = mobilenet_style(classes=10)
  model.compile('adam', 'sparse_categorical_crossentropy')
  source = keras_model_artifact(model, tmp_path / 'source')
  clusterer = Clusterer(model=channel(), examples=channel(standard_artifacts.Examples),
                        input_fn=INPUT_FN, fine_tuning=TINY,
                        clustering=clustering.ClusteringConfig(number_of_clusters=4))

  clustered, _ = run_optimizer(clusterer, source, digits_examples, tmp_path / 'clustered')
  tflite_artifact, _ = run_ptq(clustered, digits_examples, tmp_path / 'int8')

  unique = json.loads(clustered.get_string_custom_property(spec_keys.PROP_UNIQUE_WEIGHTS))
  assert all(1 < unique[name] <= 4 for name in DEPTHWISE), unique
  reloaded = model_io.load_keras_model(clustered.uri)
  assert np.unique(reloaded.get_layer('dw_1').get_weights()[0]).size <= 4
  weights = _depthwise_weights(model_io.read_tflite(tflite_artifact.uri, 'test'))
  assert len(weights) == 2 and all(w.dtype == np.int8 for w in weights)
  # BatchNormalization folded into the clustered kernels rescales each channel, so one int8
  # scale per tensor cannot keep the 4 values: PTQConverter keeps per-channel scales here (it
  # records per-tensor counts only when they hold), and 4 float values stay at most 4 int8
  # values in each channel. TFLite keeps depthwise channels on the last axis.
  assert not tflite_artifact.get_string_custom_property(spec_keys.PROP_INT8_UNIQUE_WEIGHTS)
  for w in weights:
    assert max(np.unique(w[..., c]).size for c in range(w.shape[-1])) <= 4


@pytest.mark.e2e  # Fine-tunes and converts the digits CNN: about 20 s.
def test_a_clustered_model_without_batchnorm_keeps_k_int8_values_per_tensor(
    trained_model_artifact, digits_examples, tmp_path):
  clusterer = Clusterer(model=channel(), examples=channel(standard_artifacts.Examples),
                        input_fn=INPUT_FN, fine_tuning=TINY,
                        clustering=clustering.ClusteringConfig(number_of_clusters=8))
  clustered, _ = run_optimizer(clusterer, trained_model_artifact, digits_examples,
                               tmp_path / 'clustered')
  tflite_artifact, _ = run_ptq(clustered, digits_examples, tmp_path / 'int8')

  recorded = json.loads(tflite_artifact.get_string_custom_property(
      spec_keys.PROP_INT8_UNIQUE_WEIGHTS))
  # Every kernel of the digits CNN is clustered (no BatchNormalization folds into them), and
  # one int8 scale per tensor keeps its 8 shared values as at most 8 int8 values.
  assert {name.split('/')[1] for name in recorded} >= {'conv_1', 'conv_2', 'dense', 'classifier'}
  assert all(1 < n <= 8 for n in recorded.values()), recorded
