"""Delta payload sizes for a fine-tuned retrain of the digits model, int8 and clustered int8.

    .venv/bin/python benchmarks/ota_delta_sizes.py

Trains the digits CNN (v1), fine-tunes it briefly (v2, as a retrain on fresh data would), and
for plain int8 and clustered int8 conversions prints, side by side from this one run: the full
file, its gzip, and the bsdiff4 patch v1 -> v2 that OTAPusher would publish, with ratios.
"""
import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import bsdiff4  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

from components.clusterer import clustering  # noqa: E402
from components.common import modes  # noqa: E402
from components.common import tflite  # noqa: E402
from components.ptq_converter import calibration  # noqa: E402
from components.ptq_converter import conversion  # noqa: E402
from pipelines import data  # noqa: E402
from pipelines import digits_module  # noqa: E402


def _int8(model, pixels):
  rep = calibration.representative_dataset(
      {data.PIXELS_KEY: pixels[:calibration.DEFAULT_CALIBRATION_SAMPLES]})
  return conversion.convert(model, modes.INT8, rep)


def _cluster(model, x, y):
  config = clustering.ClusteringConfig(number_of_clusters=16)
  wrapped = clustering.cluster(model, config, preserve_sparsity=False)
  wrapped.compile('adam', 'sparse_categorical_crossentropy')
  wrapped.fit(x, y, epochs=1, batch_size=32, verbose=0)
  return clustering.strip(wrapped)


def main():
  records = [e.SerializeToString() for e in data.digits_examples()]
  parsed = tf.io.parse_example(records, digits_module.FEATURE_SPEC)
  x, y = parsed[data.PIXELS_KEY].numpy(), parsed[data.LABEL_KEY].numpy()
  tf_keras.utils.set_random_seed(0)
  v1 = digits_module.build_model()
  v1.fit(x[:1437], y[:1437], epochs=10, batch_size=32, verbose=0)
  v2 = tf_keras.models.clone_model(v1)
  v2.set_weights(v1.get_weights())
  v2.compile(optimizer=tf_keras.optimizers.Adam(1e-4), loss='sparse_categorical_crossentropy')
  v2.fit(x[:1437], y[:1437], epochs=1, batch_size=32, verbose=0)  # The fine-tuned retrain.

  rows = [('int8', _int8(v1, x), _int8(v2, x)),
          ('clustered int8', _int8(_cluster(v1, x, y), x), _int8(_cluster(v2, x, y), x))]
  print('| variant | full (B) | gzip (B) | bsdiff4 v1->v2 (B) | patch / full | patch / gzip |')
  print('|---|---|---|---|---|---|')
  for name, old, new in rows:
    patch = len(bsdiff4.diff(old, new))
    zipped = tflite.gzip_size(new)
    print(f'| {name} | {len(new):,} | {zipped:,} | {patch:,} | {patch / len(new):.2f} | '
          f'{patch / zipped:.2f} |')


if __name__ == '__main__':
  main()
