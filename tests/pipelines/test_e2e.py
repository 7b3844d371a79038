"""End to end: the real pipeline through `python -m pipelines.run_local` with both runners."""
import base64
import glob
import os
import re
import shutil
import subprocess
import sys
import traceback

from cryptography.hazmat.primitives import serialization
from ml_metadata.metadata_store import metadata_store
import pytest
from tfx.orchestration import metadata

from components import errors
from components.common import tflite
from components.ota import client
from components.ota import repository
from components.ota import signing_keys
from pipelines import pipeline as pipeline_lib
from pipelines import summary
from tests.conftest import REPO_ROOT
from tests.helpers import http_server
from tests.ota.support import device_fetch
from tests.ota.support import device_venv

pytestmark = pytest.mark.e2e
PIPELINE = 'tfx_edge_digits'


def run_pipeline(output_dir, *args):
  """Runs the local entry point as a user would; returns its combined output."""
  env = dict(os.environ, TF_USE_LEGACY_KERAS='1', TF_CPP_MIN_LOG_LEVEL='2')
  proc = subprocess.run(
      [sys.executable, '-m', 'pipelines.run_local', '--output-dir', str(output_dir), *args],
      cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
      timeout=1200, check=False)
  assert proc.returncode == 0, proc.stdout[-5000:]
  return proc.stdout


def rows_by_variant(output_dir):
  paths = pipeline_lib.demo_paths(str(output_dir))
  return {r.variant: r for r in summary.summarize(paths['metadata_path'], PIPELINE)}


@pytest.fixture(scope='module')
def local_run(tmp_path_factory):
  output_dir = tmp_path_factory.mktemp('local_run')
  return output_dir, run_pipeline(output_dir, '--runner', 'local')


def expected_winner(rows):
  """The smallest gzip payload among the variants both blessed and within the budgets."""
  eligible = [r for v, r in rows.items()
              if v != 'baseline' and r.blessed == 'BLESSED' and r.budget == 'within']
  return min(eligible, key=lambda r: r.gzip_bytes).variant


def _assert_blessed_int8_push(output_dir):
  rows = rows_by_variant(output_dir)
  baseline, int8 = rows['baseline'], rows[expected_winner(rows)]
  assert int8.blessed == 'BLESSED'
  assert abs(int8.accuracy - baseline.accuracy) <= 0.01, (int8.accuracy, baseline.accuracy)
  assert int8.accuracy > 0.9
  ota = repository.OTARepository(pipeline_lib.demo_paths(str(output_dir))['ota_repository'])
  [release] = ota.releases('digits')
  assert int8.pushed_to == release.path
  tflite_model = ota.read_target(release)
  # Weights and activations int8 (biases int32), int8 I/O: nothing float is left.
  assert set(tflite.tensor_dtypes(tflite_model).values()) <= {'int8', 'int32'}
  assert len(tflite_model) == int8.size_bytes
  assert int8.size_bytes < baseline.size_bytes / 3
  return rows


def test_local_runner_pushes_a_blessed_int8_model(local_run):
  output_dir, output = local_run

  rows = _assert_blessed_int8_push(output_dir)

  assert 'finished with the local runner' in output
  # A short console: one line per step and the summary; the rest is in run.log.
  steps = re.findall(r'^\[(\d+)/(\d+)\] (\S+) done in [\d.]+ s$', output, re.M)
  assert len(steps) == int(steps[0][1]) == 23, steps
  assert len(output.splitlines()) < 80, output
  assert 'Traceback' not in output and 'FutureWarning' not in output
  with open(pipeline_lib.demo_paths(str(output_dir))['run_log']) as f:
    full_log = f.read()
  assert len(full_log.splitlines()) > 10 * len(output.splitlines())
  assert 'Component Trainer is finished.' in full_log
  # The printed summary names the pushed version directory.
  winner = expected_winner(rows)
  assert rows[winner].pushed_to == 'digits/stable/model-v000001.tflite'
  assert f'OTAPusher: pushed {rows[winner].pushed_to}' in output
  # The selection report is printed, and holds the reasons and the plots.
  report = re.search(r'Variant selection report .*: (\S+index\.html)', output).group(1)
  html = open(report).read()
  assert f'Selected: {winner}' in html
  for png in ('accuracy_vs_latency.png', 'accuracy_vs_gzip_size.png'):
    assert os.path.getsize(os.path.join(os.path.dirname(report), png)) > 1000
  assert re.search(r'accuracy gates \(Evaluators\) \d+s \(\d+%\)', output)


def test_a_device_fetches_the_pushed_model_from_the_served_repository(local_run, tmp_path):
  output_dir, _ = local_run
  ota = repository.OTARepository(pipeline_lib.demo_paths(str(output_dir))['ota_repository'])
  [release] = ota.releases('digits')
  with http_server(ota.repo_dir) as url:
    result = client.fetch(url, os.path.join(ota.metadata_dir, '1.root.json'), 'digits',
                          str(tmp_path / 'device'), health_check='require')

  assert (result.version, result.updated) == (1, True)
  # The health check ran the first example of the gate's eval split, fed as the gate fed it.
  assert result.health['passed'] and result.health['ran']
  assert release.custom['golden_input']['source'] == 'examples'
  assert release.custom['golden_input']['split'] == 'eval'
  with open(result.path, 'rb') as f:
    installed = f.read()
  assert installed == ota.read_target(release)
  assert set(tflite.tensor_dtypes(installed).values()) <= {'int8', 'int32'}
  assert release.custom['mode'] == 'int8'
  assert float(release.custom['tfma_metrics']['candidate']) > 0.9
  # The benchmark figures travel with the release (floats are strings in canonical JSON).
  assert float(release.custom['benchmark']['latency_ms']['1']['p50']) > 0
  assert release.custom['benchmark']['variant'] == expected_winner(rows_by_variant(output_dir))


def test_a_python_3_12_device_with_only_the_device_distribution_installs_the_pushed_model(
    local_run, tmp_path):
  """The device as it ships: only tfx_edge_device (and LiteRT) on another Python, fetching the
  pipeline's own repository over loopback HTTP and running its golden eval example."""
  output_dir, _ = local_run
  ota = repository.OTARepository(pipeline_lib.demo_paths(str(output_dir))['ota_repository'])
  [release] = ota.releases('digits')
  venv, _ = device_venv(tmp_path, '3.12', '[litert]')
  with http_server(ota.repo_dir) as url:
    proc, status = device_fetch(venv, ota.metadata_dir, url, tmp_path / 'device')

  assert proc.returncode == 0, proc.stderr[-2000:]
  assert (tmp_path / 'device' / 'digits.tflite').read_bytes() == ota.read_target(release)
  assert status['outcome'] == 'installed' and status['installed']['version'] == 1
  assert status['health_check']['passed'] and status['health_check']['ran']
  [golden] = [c for c in status['health_check']['checks'] if c['check'] == 'golden']
  assert golden['passed']


def test_every_variant_is_built_gated_and_listed(local_run):
  output_dir, output = local_run

  rows = rows_by_variant(output_dir)

  assert list(rows) == ['baseline', *pipeline_lib.VARIANTS]
  assert rows['pruned'].chain == 'prune > int8'
  assert rows['clustered'].chain == 'cluster > int8'
  assert rows['pcqat'].chain == 'prune > cluster > qat > int8'
  for variant in ('pruned', 'pcqat'):
    assert rows[variant].sparsity == pytest.approx(0.8, abs=0.02)
  for variant in ('clustered', 'pcqat'):
    assert rows[variant].clusters == 16
  # Zeros and shared values shrink the over-the-air payload, not the flatbuffer.
  assert rows['pcqat'].gzip_bytes < rows['pruned'].gzip_bytes < rows['ptq'].gzip_bytes
  assert rows['clustered'].gzip_bytes < rows['ptq'].gzip_bytes
  baseline = rows['baseline'].accuracy
  for variant in pipeline_lib.VARIANTS:
    row = rows[variant]
    expected = 'BLESSED' if row.accuracy >= baseline - 0.01 and row.accuracy >= 0.5 else (
        'NOT_BLESSED')
    assert row.blessed == expected, row
    assert row.budget == 'within' and row.p50_ms > 0, row
    assert (row.pushed_to != '-') == (variant == expected_winner(rows))
    assert variant in output and row.chain in output


def test_impossible_threshold_pushes_nothing_and_logs_why(local_run):
  output_dir, _ = local_run
  ota = repository.OTARepository(pipeline_lib.demo_paths(str(output_dir))['ota_repository'])
  before = ota.releases()
  timestamp = os.path.join(ota.metadata_dir, 'timestamp.json')
  with open(timestamp, 'rb') as f:
    timestamp_before = f.read()

  # Unchanged steps come from the cache: only the Evaluators and what follows them run again.
  output = run_pipeline(output_dir, '--runner', 'local', '--enable-cache', '--min-accuracy', '1.0')

  rows = rows_by_variant(output_dir)
  int8 = rows[pipeline_lib.PTQ]
  assert int8.accuracy < 1.0
  assert int8.blessed == 'NOT_BLESSED'
  assert all(r.pushed_to == '-' for r in rows.values())
  assert 'OTAPusher: not pushed: VariantSelector chose no model to ship' in output
  assert 'OTAPusher: NOT pushing' in output
  assert f'sparse_categorical_accuracy value = {int8.accuracy:+.4f} fails the bound >= 1.0000' in (
      output)
  assert ota.releases() == before
  with open(timestamp, 'rb') as f:
    assert f.read() == timestamp_before  # The repository did not change at all.


def _key_material(keys_dir):
  """{what: bytes} for every form in which a signing key could leak."""
  secrets = {}
  # Rotation keeps replaced and pending keys beside the current ones (*.pem.old-N, *.pem.new).
  for path in sorted(glob.glob(os.path.join(keys_dir, '*.pem*'))):
    with open(path, 'rb') as f:
      pem = f.read()
    raw = serialization.load_pem_private_key(pem, password=None).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    role = os.path.basename(path)
    secrets[f'{role} PEM body'] = b''.join(pem.splitlines()[1:-1])
    secrets[f'{role} raw key'] = raw
    secrets[f'{role} raw key, hex'] = raw.hex().encode()
    secrets[f'{role} raw key, base64'] = base64.b64encode(raw)
  return secrets


def test_signing_keys_appear_in_no_metadata_log_spec_artifact_or_error(local_run, tmp_path):
  output_dir, output = local_run
  paths = pipeline_lib.demo_paths(str(output_dir))
  secrets = _key_material(paths['ota_keys_dir'])
  assert len(secrets) >= 16  # Four roles at least; the pusher signed with them in this run.

  places = {'the console output of the run': output.encode()}
  with open(paths['run_log'], 'rb') as f:
    places['the full log of the run (run.log)'] = f.read()
  with open(paths['metadata_path'], 'rb') as f:
    places['the ML Metadata database file'] = f.read()
  store = metadata_store.MetadataStore(
      metadata.sqlite_metadata_connection_config(paths['metadata_path']))
  for execution in store.get_executions():  # Exec properties are its custom properties.
    places[f'execution {execution.id} and its exec properties'] = str(execution).encode()
  for artifact in store.get_artifacts():
    places[f'artifact {artifact.id} and its properties'] = str(artifact).encode()
  # Every artifact and executor log, and the repository devices download from.
  for root in (paths['pipeline_root'], paths['ota_repository']):
    for path in glob.glob(os.path.join(root, '**', '*'), recursive=True):
      if os.path.isfile(path):
        with open(path, 'rb') as f:
          places[path] = f.read()
  spec = tmp_path / 'pipeline.yaml'
  subprocess.run([sys.executable, '-m', 'pipelines.run_kubeflow', '--output', str(spec),
                  '--ota-keys', paths['ota_keys_dir'], '--ota-repository', paths['ota_repository']],
                 cwd=REPO_ROOT, env=dict(os.environ, TF_USE_LEGACY_KERAS='1'), check=True,
                 capture_output=True, timeout=600)
  places['the compiled Kubeflow spec'] = spec.read_bytes()
  # The error a push raises when it loads a corrupt copy of these keys.
  broken_keys = tmp_path / 'keys'
  shutil.copytree(paths['ota_keys_dir'], broken_keys)
  pem = (broken_keys / 'targets.pem').read_bytes()
  (broken_keys / 'targets.pem').write_bytes(pem[:-40])
  with pytest.raises(errors.SigningKeyError) as raised:
    signing_keys.load(str(broken_keys))
  places['the error of a corrupt key'] = ''.join(
      traceback.format_exception(raised.type, raised.value, raised.tb)).encode()

  leaks = [f'{what} in {where}' for where, blob in places.items()
           for what, secret in secrets.items() if secret in blob]
  assert not leaks
  assert len(places) > 50  # The scan did read the run's files.


def test_beam_runner_pushes_a_blessed_int8_model(tmp_path):
  output = run_pipeline(tmp_path, '--runner', 'beam', '--variants', 'ptq')

  _assert_blessed_int8_push(tmp_path)
  assert 'finished with the beam runner' in output
