"""Clustering logic (components/clusterer/clustering.py) on a small conv net."""
import numpy as np
import pytest

from components import errors
from components.clusterer import clustering
from components.pruner import pruning
from tests.helpers import conv_model
from tests.helpers import fit_briefly
from tests.helpers import prune_briefly


@pytest.mark.parametrize('init', sorted(clustering.CENTROID_INITS))
def test_clustering_leaves_at_most_n_unique_values_per_layer(init):
  config = clustering.ClusteringConfig(number_of_clusters=6, centroid_init=init)
  model = fit_briefly(conv_model())
  layers, too_small = clustering.clusterable_layers(model, config)  # As the executor does.

  wrapped = clustering.cluster(model, config, preserve_sparsity=False)
  fit_briefly(wrapped)
  stripped = clustering.strip(wrapped)

  unique = clustering.unique_weights(stripped, layers)
  assert set(unique) == {'conv_a', 'conv_b', 'dense_a', 'head'}
  assert too_small == {}
  assert all(1 < count <= 6 for count in unique.values()), unique


def test_per_channel_clustering_limits_each_conv_channel():
  config = clustering.ClusteringConfig(number_of_clusters=4, per_channel=True)
  wrapped = clustering.cluster(fit_briefly(conv_model()), config, preserve_sparsity=False)
  fit_briefly(wrapped)
  stripped = clustering.strip(wrapped)

  kernel = stripped.get_layer('conv_b').get_weights()[0]
  per_channel = [np.unique(kernel[..., c]).size for c in range(kernel.shape[-1])]
  assert max(per_channel) <= 4
  assert np.unique(kernel).size > 4  # Channels have their own centroids.


def test_clustering_after_pruning_preserves_the_zeros(tmp_path):
  pruned, layers = prune_briefly(pruning.PruningConfig(target_sparsity=0.7, end=0.5), tmp_path)
  before = pruning.sparsity(pruned, layers)[1]
  config = clustering.ClusteringConfig(number_of_clusters=8, skip_layers='^conv_a$')
  chosen, too_small = clustering.clusterable_layers(pruned, config, preserve_sparsity=True)

  wrapped = clustering.cluster(pruned, config, preserve_sparsity=True)
  fit_briefly(wrapped)
  stripped = clustering.strip(wrapped)

  assert pruning.sparsity(stripped, ['conv_b', 'dense_a', 'head'])[1] >= before - 0.02
  assert 'conv_a' not in chosen and 'conv_a' not in too_small


@pytest.mark.parametrize('kwargs,message', [
    (dict(number_of_clusters=1),
     'number_of_clusters=1 is not accepted; it must be an integer >= 2'),
    (dict(centroid_init='kmeans'), "centroid_init='kmeans' is not accepted; accepted: kmeans"),
    (dict(skip_layers='['), "skip_layers='\\[' is not a valid regular expression"),
    (dict(preserve_sparsity='yes'), "preserve_sparsity='yes' must be True, False or None"),
])
def test_clustering_config_names_the_bad_value(kwargs, message):
  with pytest.raises(errors.ConfigError, match=message):
    clustering.ClusteringConfig(**kwargs)


def test_a_model_with_nothing_left_to_cluster_is_refused():
  with pytest.raises(errors.ConfigError, match="clustering: no layer left to cluster "
                     "\\(skip_layers='.', number_of_clusters=16\\)"):
    clustering.cluster(conv_model(), clustering.ClusteringConfig(skip_layers='.'),
                       preserve_sparsity=False)
