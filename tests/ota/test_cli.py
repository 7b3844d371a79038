"""The `tfx-edge` console script: it prints only what was asked for, and says how it is used."""
import argparse
import os
import subprocess
import sys

import pytest

from components.ota import cli
from components.ota import repository
from components.ptq_converter import calibration
from components.ptq_converter import conversion
from tests.conftest import REPO_ROOT
from tests.conftest import random_pixels
from tests.ota.support import status_lines

TFX_EDGE = os.path.join(os.path.dirname(sys.executable), 'tfx-edge')


def _run(*args, cwd=None):
  env = {k: v for k, v in os.environ.items() if not k.startswith('TF_CPP')}
  return subprocess.run([TFX_EDGE, *args], capture_output=True, text=True, env=env, cwd=cwd,
                        timeout=120, check=False)


@pytest.fixture(scope='module')
def model_file(tmp_path_factory, tiny_model):
  path = tmp_path_factory.mktemp('model') / 'model.tflite'
  path.write_bytes(conversion.convert(
      tiny_model, 'int8', calibration.representative_dataset({'pixels': random_pixels()})))
  return str(path)


def test_version_names_the_installed_release():
  proc = _run('--version')
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.strip() == f'tfx-edge {cli._version()}'  # pylint: disable=protected-access
  assert proc.stdout.strip() != 'tfx-edge unknown (not installed)'


@pytest.mark.parametrize('args,message', [
    ((), 'tfx-edge: error: a command group is required: ota (see tfx-edge --help)'),
    (('ota',), 'a command is required: tfx-edge ota {init,publish,approve,reject,promote,halt,'
               'rollback,rotate-keys,refresh,renew-root,status,gc,config,fetch}'),
    (('ota', 'publish', '--repo', 'r', '--keys', 'k', '--name', 'n', '--model', 'missing.tflite'),
     '--model missing.tflite: no such file'),
    (('ota', 'fetch', '--url', 'http://127.0.0.1:9', '--trusted-root', 'nope.json', '--name', 'n',
      '--dest', 'd'), '--trusted-root nope.json: no such file'),
    (('ota', 'frobnicate'), "invalid choice: 'frobnicate'"),
])
def test_usage_errors_say_what_is_missing_and_exit_2(tmp_path, args, message):
  proc = _run(*args, cwd=tmp_path)
  assert proc.returncode == 2
  assert message in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert proc.stdout == ''
  assert os.listdir(tmp_path) == []  # Nothing was created before the arguments were checked.


def _subparsers(parser):
  for action in parser._actions:  # pylint: disable=protected-access
    if isinstance(action, argparse._SubParsersAction):  # pylint: disable=protected-access
      for name, sub in action.choices.items():
        yield name, sub
        yield from ((f'{name} {n}', s) for n, s in _subparsers(sub))


def test_every_option_has_help_and_shows_its_default():
  parser = cli._parser()  # pylint: disable=protected-access
  checked = 0
  for name, sub in _subparsers(parser):
    text = sub.format_help()
    for action in sub._actions:  # pylint: disable=protected-access
      if not action.option_strings or action.help == argparse.SUPPRESS:
        continue
      assert action.help, f'{name} {action.option_strings[0]} has no help text'
      if action.default not in (None, argparse.SUPPRESS) and not isinstance(action.default, bool):
        assert f'(default: {action.default})' in ' '.join(text.split()), (name, action.dest)
        checked += 1
  # --channel (publish, fetch), --delta-last-k, --delta-max-ratio at least.
  assert checked >= 4


def test_cli_defaults_are_the_library_defaults():
  parser = cli._parser()  # pylint: disable=protected-access
  subs = dict(_subparsers(parser))
  publish = subs['ota publish'].parse_args(['--repo', 'r', '--keys', 'k', '--name', 'n',
                                            '--model', 'm'])
  assert publish.channel == repository.DEFAULT_CHANNEL
  assert (publish.delta_last_k, publish.delta_max_ratio) == (
      repository.DeltaPolicy().last_k, repository.DeltaPolicy().max_ratio)
  fetch = subs['ota fetch'].parse_args(['--url', 'u', '--trusted-root', 't', '--name', 'n',
                                        '--dest', 'd'])
  assert fetch.channel == repository.DEFAULT_CHANNEL


def test_commands_print_only_their_result(tmp_path, model_file):
  repo, keys = str(tmp_path / 'repo'), str(tmp_path / 'keys')
  init = _run('ota', 'init', '--repo', repo, '--keys', keys)
  publish = _run('ota', 'publish', '--repo', repo, '--keys', keys, '--model', model_file,
                 '--name', 'digits')
  status = _run('ota', 'status', '--repo', repo)

  for proc in (init, publish, status):
    assert proc.returncode == 0, proc.stderr
    # No FutureWarning from google.api_core, no TensorFlow or LiteRT log line.
    assert proc.stderr == ''
  assert init.stdout.splitlines() == [
      f'created OTA repository {repo} (trusted root: {repo}/metadata/1.root.json)']
  assert publish.stdout.splitlines() == [
      'published digits version 1 on stable: digits/stable/model-v000001.tflite']
  [release], roles = status_lines(status.stdout)
  assert release['name'] == 'digits' and release['version'] == 1
  assert [(r['role'], r['warning']) for r in roles] == [
      ('root', None), ('targets', None), ('snapshot', None), ('timestamp', None),
      ('digits', None)]


def test_publish_inspects_the_model_without_tensorflow(tmp_path, model_file):
  repo, keys = str(tmp_path / 'repo'), str(tmp_path / 'keys')
  script = (
      'import sys\n'
      'from components.ota import cli\n'
      f'assert cli.main(["ota", "init", "--repo", {repo!r}, "--keys", {keys!r}]) == 0\n'
      f'assert cli.main(["ota", "publish", "--repo", {repo!r}, "--keys", {keys!r}, "--model", '
      f'{model_file!r}, "--name", "digits"]) == 0\n'
      'print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tfx")))\n')
  proc = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                        cwd=REPO_ROOT, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.splitlines()[-1] == '[]'
  [release] = repository.OTARepository(repo).releases('digits')
  assert release.custom['tensors']['inputs'][0]['dtype'] == 'int8'


def test_a_file_that_is_not_a_model_is_refused_before_publishing(tmp_path):
  repo, keys = str(tmp_path / 'repo'), str(tmp_path / 'keys')
  assert _run('ota', 'init', '--repo', repo, '--keys', keys).returncode == 0
  bogus = tmp_path / 'notes.txt'
  bogus.write_text('not a model')

  proc = _run('ota', 'publish', '--repo', repo, '--keys', keys, '--model', str(bogus),
              '--name', 'digits')

  assert proc.returncode == 2
  assert f'error: --model {bogus} is not a TFLite model' in proc.stderr
  assert repository.OTARepository(repo).releases() == []


def test_a_refused_value_is_an_error_line_not_a_traceback(tmp_path, model_file):
  repo, keys = str(tmp_path / 'repo'), str(tmp_path / 'keys')
  assert _run('ota', 'init', '--repo', repo, '--keys', keys).returncode == 0

  proc = _run('ota', 'publish', '--repo', repo, '--keys', keys, '--model', model_file,
              '--name', 'digits', '--channel', 'Canary')

  assert proc.returncode == 2
  assert proc.stderr.startswith("error: channel='Canary' is not accepted")
  assert 'Traceback' not in proc.stderr
