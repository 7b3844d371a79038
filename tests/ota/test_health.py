"""The device's health check and rollback: a signed but broken model is never switched to.

Real TFLite models (tests/conftest.py's tflite_models), real LiteRT, real TUF metadata, and the
device client over loopback HTTP through a server that counts what it serves.
"""
import base64
import contextlib
import http.server
import json
import os
import threading

import numpy as np
import pytest
from tfx_edge_device import cli as device_cli
from tfx_edge_device import health

from components.common import tflite
from components.ota import cli
from components.ota import client
from components.ota import repository


@contextlib.contextmanager
def counting_server(repo_dir):
  """Serves repo_dir on loopback; yields (url, requests), the list of paths asked for."""
  requests = []

  class Handler(http.server.SimpleHTTPRequestHandler):

    def __init__(self, *args, **kwargs):
      super().__init__(*args, directory=repo_dir, **kwargs)

    def do_GET(self):  # pylint: disable=invalid-name
      requests.append(self.path)
      super().do_GET()

    def log_message(self, *args):
      pass

  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f'http://127.0.0.1:{server.server_address[1]}', requests
  finally:
    server.shutdown()
    server.server_close()


@pytest.fixture
def served(repo):
  with counting_server(repo.repo_dir) as (url, requests):
    yield url, requests


def _publish(repo, model, golden_of=None, tensors_of=None, **kwargs):
  """Publishes as OTAPusher does: tensors and golden record computed from a model (by default
  the one published; another one when the test plays a publisher bug)."""
  info = {'tensors': tflite.io_specs(tensors_of or golden_of or model)}
  golden = health.record_bytes(health.golden_record(golden_of or model))
  return repo.publish('digits', model, info=info, golden=golden, **kwargs)


def _fetch(repo, url, dest, **kwargs):
  root = os.path.join(repo.metadata_dir, '1.root.json')
  return client.fetch(url, root, 'digits', str(dest), **kwargs)


def _status(dest):
  with open(os.path.join(dest, 'digits.status.json')) as f:
    return json.load(f)


def _model_requests(requests):
  return [r for r in requests if r.startswith('/targets/')]


def test_a_healthy_model_is_checked_then_installed_and_the_status_says_so(
    repo, served, tmp_path, tflite_models):
  url, _ = served
  release = _publish(repo, tflite_models['int8'])
  dest = tmp_path / 'device'

  result = _fetch(repo, url, dest)

  assert result.outcome == 'installed' and (dest / 'digits.tflite').read_bytes() == \
      tflite_models['int8']
  status = _status(dest)
  assert status['outcome'] == 'installed' and result.status_path == str(dest /
                                                                        'digits.status.json')
  assert status['installed'] == {'version': 1, 'sha256': release.sha256, 'channel': 'stable'}
  assert status['health_check']['passed'] and status['health_check']['ran']
  assert [c['check'] for c in status['health_check']['checks']] == ['load', 'tensors', 'golden']
  golden = status['health_check']['checks'][2]['outputs'][0]
  # The same model on the same machine computes the recorded output exactly.
  assert golden['max_abs_error'] == 0.0 and golden['atol'] > 0
  # The golden record is a signed target of its own, next to the model, in the same commit.
  ref = release.custom['golden']
  assert ref['path'] == 'digits/stable/model-v000001.golden.json'
  assert status['downloaded_bytes'] == len(tflite_models['int8']) + ref['length']


def test_a_corrupted_but_correctly_signed_model_is_refused_and_the_previous_one_stays(
    repo, served, tmp_path, tflite_models):
  url, requests = served
  dest = tmp_path / 'device'
  _publish(repo, tflite_models['fp32'])
  _fetch(repo, url, dest)
  before = (dest / 'digits.tflite').read_bytes()
  # A publisher bug: garbage bytes signed as version 2, with the golden record of a real model.
  garbage = np.random.default_rng(0).integers(0, 256, 6000, dtype=np.uint8).tobytes()
  bad = _publish(repo, garbage, golden_of=tflite_models['fp32'])

  with pytest.raises(client.HealthCheckError, match='version 2 failed its health check on this '
                     'device: the model does not load in LiteRT') as raised:
    _fetch(repo, url, dest)

  assert (dest / 'digits.tflite').read_bytes() == before  # Byte-identical.
  state = json.loads((dest / 'digits.json').read_text())
  assert state['version'] == 1 and [r['version'] for r in state['refused']] == [2]
  assert not (dest / 'digits.previous.tflite').exists()
  status = _status(dest)
  assert status == raised.value.status
  assert status['outcome'] == 'refused' and 'does not load in LiteRT' in status['reason']
  assert status['installed']['version'] == 1
  assert status['selected'] == {'version': 2, 'sha256': bad.sha256, 'path': bad.path}
  assert status['health_check']['checks'] == [
      {'check': 'load', 'passed': False, 'error': status['health_check']['checks'][0]['error']}]

  # The next fetch does not download the refused bytes again, and says why.
  requests.clear()
  with pytest.raises(client.HealthCheckError, match='was refused on this device at'):
    _fetch(repo, url, dest)
  assert _model_requests(requests) == []
  assert _status(dest)['previously_refused']['sha256'] == bad.sha256
  assert (dest / 'digits.tflite').read_bytes() == before


def test_a_model_whose_outputs_differ_beyond_the_tolerance_is_refused(
    repo, served, tmp_path, tflite_models):
  url, _ = served
  dest = tmp_path / 'device'
  _publish(repo, tflite_models['fp32'])
  _fetch(repo, url, dest)
  installed = (dest / 'digits.tflite').read_bytes()
  # The golden record of the published model, with outputs another model would compute.
  record = health.golden_record(tflite_models['int8'])
  out = record['outputs'][0]
  dtype = np.dtype(out['dtype'])
  values = np.frombuffer(base64.b64decode(out['data']), dtype=dtype)
  if np.issubdtype(dtype, np.floating):
    other = values + 0.5
  else:
    other = np.clip(values.astype(np.int64) + 64, np.iinfo(dtype).min, np.iinfo(dtype).max)
  out['data'] = base64.b64encode(other.astype(dtype).tobytes()).decode()
  repo.publish('digits', tflite_models['int8'], info={'tensors': tflite.io_specs(
      tflite_models['int8'])}, golden=health.record_bytes(record))

  code = cli.main(['ota', 'fetch', '--url', url, '--trusted-root',
                   os.path.join(repo.metadata_dir, '1.root.json'), '--name', 'digits', '--dest',
                   str(dest)])

  assert code == device_cli.EXIT_HEALTH == 4
  assert (dest / 'digits.tflite').read_bytes() == installed
  status = _status(dest)
  assert status['outcome'] == 'refused' and 'outside the tolerance' in status['reason']
  golden = status['health_check']['checks'][-1]
  assert golden['check'] == 'golden' and not golden['passed']
  assert golden['outputs'][0]['max_abs_error'] > golden['outputs'][0]['atol']


def test_a_model_with_other_tensors_than_the_signed_ones_is_refused(
    repo, served, tmp_path, tflite_models):
  url, _ = served
  specs = tflite.io_specs(tflite_models['int8'])
  specs['inputs'][0]['shape'] = [-1, 65]
  repo.publish('digits', tflite_models['int8'], info={'tensors': specs})

  with pytest.raises(client.HealthCheckError, match=r"its tensors differ from the signed ones: "
                     r"input '[^']*': shape \[-?1, 64\], signed \[-1, 65\]"):
    _fetch(repo, url, tmp_path / 'device')

  assert not (tmp_path / 'device' / 'digits.tflite').exists()
  assert _status(tmp_path / 'device')['installed'] is None


def test_a_halted_release_rolls_back_to_the_kept_model_without_a_download(
    repo, served, tmp_path, tflite_models):
  url, requests = served
  dest = tmp_path / 'device'
  _publish(repo, tflite_models['fp32'])
  _fetch(repo, url, dest)
  _publish(repo, tflite_models['int8'])
  assert _fetch(repo, url, dest).version == 2
  assert (dest / 'digits.previous.tflite').read_bytes() == tflite_models['fp32']
  repo.halt('digits', 2, by='oncall')
  requests.clear()

  back = _fetch(repo, url, dest)

  assert (back.outcome, back.version) == ('rolled_back', 1)
  assert (dest / 'digits.tflite').read_bytes() == tflite_models['fp32']
  assert _model_requests(requests) == []  # Metadata only.
  assert any(r.startswith('/metadata/') for r in requests)
  status = _status(dest)
  assert status['outcome'] == 'rolled_back' and status['installed']['version'] == 1
  # The halted model is the one kept now: a promote back would not need a download either.
  assert (dest / 'digits.previous.tflite').read_bytes() == tflite_models['int8']


def test_a_local_rollback_restores_the_previous_model_and_the_next_fetch_keeps_it(
    repo, served, tmp_path, tflite_models, capsys):
  url, requests = served
  dest = tmp_path / 'device'
  _publish(repo, tflite_models['fp32'])
  _fetch(repo, url, dest)
  _publish(repo, tflite_models['int8'])
  _fetch(repo, url, dest)

  code = device_cli.main(['rollback', '--dest', str(dest), '--name', 'digits', '--reason',
                          'crash in the app'])

  assert code == 0 and 'rolled back: digits version 1' in capsys.readouterr().out
  assert (dest / 'digits.tflite').read_bytes() == tflite_models['fp32']
  assert _status(dest)['rolled_back_from']['version'] == 2
  requests.clear()
  with pytest.raises(client.HealthCheckError, match='crash in the app'):
    _fetch(repo, url, dest)
  assert _model_requests(requests) == []
  assert (dest / 'digits.tflite').read_bytes() == tflite_models['fp32']


def test_rollback_without_a_kept_model_is_a_clear_error(repo, served, tmp_path):
  with pytest.raises(client.RollbackError, match='no previous model of digits is kept'):
    client.rollback(str(tmp_path / 'device'), 'digits')


def test_require_refuses_a_release_that_records_nothing_to_check(repo, served, tmp_path):
  url, _ = served
  repo.publish('digits', b'model-one')

  auto = _fetch(repo, url, tmp_path / 'auto')
  with pytest.raises(client.HealthCheckError, match='records neither tensor specs nor a golden'):
    _fetch(repo, url, tmp_path / 'strict', health_check='require')

  assert auto.health['ran'] is False and auto.outcome == 'installed'
  assert not (tmp_path / 'strict' / 'digits.tflite').exists()


@pytest.mark.parametrize('content,message', [
    (None, 'cannot be read'),  # A directory where the file should be.
    (b'\xff\xfe', 'cannot be read'),
])
def test_an_unreadable_device_id_file_is_a_clear_error_and_a_status(
    repo, served, tmp_path, capsys, content, message):
  url, requests = served
  dest = tmp_path / 'device'
  dest.mkdir()
  if content is None:
    (dest / 'device_id').mkdir()
  else:
    (dest / 'device_id').write_bytes(content)

  code = device_cli.main(['fetch', '--url', url, '--trusted-root',
                          os.path.join(repo.metadata_dir, '1.root.json'), '--name', 'digits',
                          '--dest', str(dest)])

  err = capsys.readouterr().err
  assert code == 2 and f'the device id file {dest}/device_id {message}' in err
  assert 'pass --device-id' in err and requests == []
  status = _status(dest)
  assert status['outcome'] == 'error' and status['error']['type'] == 'ConfigError'
  assert not (dest / 'metadata').exists()


def test_the_status_file_goes_where_it_is_told(repo, served, tmp_path, tflite_models):
  url, _ = served
  _publish(repo, tflite_models['int8'])
  where = tmp_path / 'agent' / 'status.json'
  where.parent.mkdir()

  _fetch(repo, url, tmp_path / 'device', status_file=str(where))

  assert json.loads(where.read_text())['outcome'] == 'installed'
  assert not (tmp_path / 'device' / 'digits.status.json').exists()


def test_a_bad_health_check_mode_or_golden_is_refused_before_anything(repo, tmp_path):
  with pytest.raises(repository.ConfigError, match="health_check='sometimes' is not accepted: "
                     'use one of auto, require, off'):
    _fetch(repo, 'http://127.0.0.1:9', tmp_path / 'device', health_check='sometimes')
  with pytest.raises(repository.ConfigError, match='golden=.* is not accepted'):
    repo.publish('digits', b'model', golden={'inputs': []})
  assert repo.releases() == []
  with pytest.raises(ValueError, match='tolerance=0 is not accepted'):
    health.golden_record(b'unused', tolerance=0)


def test_the_ota_pusher_signs_a_golden_record_that_a_device_checks(repo, served, tmp_path,
                                                                   tflite_models):
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from components import OTAPusher  # pylint: disable=g-import-not-at-top
  from components import spec_keys  # pylint: disable=g-import-not-at-top
  from components.ota import executor as ota_executor  # pylint: disable=g-import-not-at-top
  from tests.helpers import blessing_artifact  # pylint: disable=g-import-not-at-top
  from tests.helpers import channel  # pylint: disable=g-import-not-at-top
  from tests.helpers import tflite_model_artifact  # pylint: disable=g-import-not-at-top
  url, _ = served
  model = tflite_model_artifact(tmp_path / 'model', tflite_models['int8'])
  pushed = standard_artifacts.PushedModel()
  pushed.uri = str(tmp_path / 'pushed')
  component = OTAPusher(model=channel(), model_blessing=channel(standard_artifacts.ModelBlessing),
                        repository_dir=repo.repo_dir, keys_dir=repo._keys_dir,  # pylint: disable=protected-access
                        model_name='digits')
  ota_executor.Executor().Do(
      {spec_keys.MODEL_KEY: [model],
       spec_keys.MODEL_BLESSING_KEY: [blessing_artifact(tmp_path / 'blessing', model, True)]},
      {spec_keys.PUSHED_MODEL_KEY: [pushed]}, dict(component.exec_properties))

  [release] = repo.releases('digits')
  ref = release.custom['golden']
  # Stored as every target is (consistent snapshots): named by its hash.
  golden = json.loads(repo.storage.read(
      f'targets/digits/stable/{ref["sha256"]}.model-v000001.golden.json'))
  assert golden == health.golden_record(tflite_models['int8'])  # Deterministic.
  assert [x['name'] for x in golden['inputs']] == [
      t['name'] for t in release.custom['tensors']['inputs']]
  result = _fetch(repo, url, tmp_path / 'device', health_check='require')
  assert result.health['passed'] and result.health['ran']


def _push_with_examples(repo, tmp_path, model_bytes, examples, **kwargs):
  """Runs OTAPusher's executor on a blessed model with `examples` wired; returns the artifact."""
  from tfx.types import standard_artifacts  # pylint: disable=g-import-not-at-top
  from components import OTAPusher  # pylint: disable=g-import-not-at-top
  from components import spec_keys  # pylint: disable=g-import-not-at-top
  from components.ota import executor as ota_executor  # pylint: disable=g-import-not-at-top
  from tests.helpers import blessing_artifact  # pylint: disable=g-import-not-at-top
  from tests.helpers import channel  # pylint: disable=g-import-not-at-top
  from tests.helpers import tflite_model_artifact  # pylint: disable=g-import-not-at-top
  model = tflite_model_artifact(tmp_path / 'model', model_bytes)
  pushed = standard_artifacts.PushedModel()
  pushed.uri = str(tmp_path / 'pushed')
  component = OTAPusher(model=channel(), model_blessing=channel(standard_artifacts.ModelBlessing),
                        repository_dir=repo.repo_dir, keys_dir=repo._keys_dir,  # pylint: disable=protected-access
                        model_name='digits', examples=channel(standard_artifacts.Examples),
                        **kwargs)
  ota_executor.Executor().Do(
      {spec_keys.MODEL_KEY: [model], spec_keys.EXAMPLES_KEY: [examples],
       spec_keys.MODEL_BLESSING_KEY: [blessing_artifact(tmp_path / 'blessing', model, True)]},
      {spec_keys.PUSHED_MODEL_KEY: [pushed]}, dict(component.exec_properties))
  return pushed


def test_the_golden_input_is_the_first_eval_example_quantized_as_a_device_does(
    repo, served, tmp_path, tflite_models, digits_examples, digits_records):
  from components import spec_keys  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  url, _ = served
  pushed = _push_with_examples(repo, tmp_path, tflite_models['int8'], digits_examples)

  [release] = repo.releases('digits')
  source = {'source': 'examples', 'examples': digits_examples.uri, 'split': 'eval', 'index': 0}
  assert release.custom['golden_input'] == source
  assert json.loads(pushed.get_string_custom_property(spec_keys.PROP_GOLDEN_INPUT)) == source
  ref = release.custom['golden']
  golden = json.loads(repo.storage.read(
      f'targets/digits/stable/{ref["sha256"]}.model-v000001.golden.json'))
  # The first example of the eval split (the 1,438th digit), rounded to the int8 input's grid.
  pixels = np.array(tf.train.Example.FromString(digits_records[1437]).features.feature[
      'pixels'].float_list.value)
  [detail] = tflite.interpreter(tflite_models['int8']).get_input_details()
  scale, zero_point = detail['quantization']
  assert detail['dtype'] == np.int8 and scale > 0
  want = np.clip(np.round(pixels / scale + zero_point), -128, 127).astype(np.int8)
  [entry] = golden['inputs']
  got = np.frombuffer(base64.b64decode(entry['data']), np.int8)
  np.testing.assert_array_equal(got, want)
  assert (entry['shape'], entry['name']) == ([1, 64], detail['name'])
  assert len(set(got.tolist())) > 2  # A digit, not the uniform noise of the default input.
  assert golden == health.golden_record(tflite_models['int8'], [want.reshape(1, 64)])
  result = _fetch(repo, url, tmp_path / 'device', health_check='require')
  assert result.health['passed'] and result.health['ran']


def test_a_golden_split_or_feature_the_examples_lack_stops_the_push_before_anything_is_signed(
    repo, tmp_path, tflite_models, digits_examples, digits_records):
  from components.errors import ConfigError  # pylint: disable=g-import-not-at-top
  from components.errors import DataError  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tests.conftest import write_examples  # pylint: disable=g-import-not-at-top
  with pytest.raises(DataError, match=r"no split 'test' \(golden_split\); its splits are "
                     r"\['train', 'eval'\]"):
    _push_with_examples(repo, tmp_path / 'a', tflite_models['int8'], digits_examples,
                        golden_split='test')
  renamed = []
  for record in digits_records[:3]:
    example = tf.train.Example.FromString(record)
    example.features.feature['image'].CopyFrom(example.features.feature['pixels'])
    del example.features.feature['pixels']
    renamed.append(example.SerializeToString())
  other = write_examples(str(tmp_path / 'other'), {'eval': renamed})
  with pytest.raises(DataError, match=r"no feature 'pixels' for the model input .*its features "
                     r"are \['image', 'label'\].*gate_examples"):
    _push_with_examples(repo, tmp_path / 'b', tflite_models['int8'], other)
  short = []
  for record in digits_records[:3]:
    example = tf.train.Example.FromString(record)
    del example.features.feature['pixels'].float_list.value[60:]
    short.append(example.SerializeToString())
  with pytest.raises(DataError, match=r"'pixels' of the golden example has 60 values, which do "
                     r"not fill the model input .* of shape \[-1, 64\]"):
    _push_with_examples(repo, tmp_path / 'c', tflite_models['int8'],
                        write_examples(str(tmp_path / 'short'), {'eval': short}))
  assert repo.releases('digits') == []  # Nothing signed.
  with pytest.raises(ConfigError, match='golden_split=.eval. is given without examples'):
    from components import OTAPusher  # pylint: disable=g-import-not-at-top
    from tests.helpers import channel  # pylint: disable=g-import-not-at-top
    OTAPusher(model=channel(), model_blessing=channel(), repository_dir=repo.repo_dir,
              keys_dir=repo._keys_dir, model_name='digits', golden_split='eval')  # pylint: disable=protected-access


def test_a_fetch_killed_while_switching_leaves_a_model_and_a_rerun_keeps_the_right_previous(
    repo, served, tmp_path, tflite_models, monkeypatch):
  from tfx_edge_device import client as device_client  # pylint: disable=g-import-not-at-top
  url, _ = served
  dest = tmp_path / 'device'
  _publish(repo, tflite_models['fp32'])
  _fetch(repo, url, dest)
  _publish(repo, tflite_models['int8'])
  write = device_client._write_json  # pylint: disable=protected-access

  def dies_before_the_new_state(path, value):
    if path == str(dest / 'digits.json') and value.get('version') == 2:
      raise KeyboardInterrupt('killed')  # Between the model's replace and its state's.
    write(path, value)

  monkeypatch.setattr(device_client, '_write_json', dies_before_the_new_state)
  with pytest.raises(KeyboardInterrupt):
    _fetch(repo, url, dest)
  monkeypatch.setattr(device_client, '_write_json', write)
  assert (dest / 'digits.tflite').read_bytes() == tflite_models['int8']  # Never missing.
  assert json.loads((dest / 'digits.json').read_text())['version'] == 1  # Stale.

  again = _fetch(repo, url, dest)

  assert (again.outcome, again.version) == ('installed', 2)
  # The model kept for a rollback is still version 1, with its own state.
  assert (dest / 'digits.previous.tflite').read_bytes() == tflite_models['fp32']
  assert json.loads((dest / 'digits.previous.json').read_text())['version'] == 1
  assert client.rollback(str(dest), 'digits').version == 1
  assert (dest / 'digits.tflite').read_bytes() == tflite_models['fp32']
