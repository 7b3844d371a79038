"""The short console log of pipeline runs (pipelines/progress.py), fed real log records."""
import io
import logging
import os
import warnings

from absl import logging as absl_logging
import pytest

from pipelines import progress
from tests.conftest import REPO_ROOT


@pytest.fixture
def quiet_log():
  """progress.quiet() on a string stream; the root logger's handlers are restored afterwards."""
  root = logging.getLogger()
  saved_handlers, saved_level = list(root.handlers), root.level
  stream = io.StringIO()
  handler = progress.quiet(total_steps=3, stream=stream)
  yield handler, stream
  logging.captureWarnings(False)
  for h in list(root.handlers):
    root.removeHandler(h)
  for h in saved_handlers:
    root.addHandler(h)
  root.setLevel(saved_level)


def _record(level, message, pathname):
  return logging.makeLogRecord({'name': 'absl', 'levelno': level,
                                'levelname': logging.getLevelName(level), 'msg': message,
                                'pathname': pathname})


def test_one_line_per_finished_step_with_its_time(quiet_log):
  handler, stream = quiet_log
  # What LocalDagRunner logs around each step, through absl as it does.
  absl_logging.info('Component %s is running.', 'ImportExampleGen')
  absl_logging.info('Running launcher for %s', 'a long proto dump')
  absl_logging.info('Component %s is finished.', 'ImportExampleGen')
  absl_logging.info('node %s is running.', 'Trainer')  # BeamDagRunner's wording.
  absl_logging.info('A cached execution %d is used.', 7)
  absl_logging.info('node %s is finished.', 'Trainer')

  lines = stream.getvalue().splitlines()
  assert len(lines) == 2, lines
  assert lines[0].startswith('[1/3] ImportExampleGen done in ')
  assert lines[0].endswith(' s')
  assert lines[1].startswith('[2/3] Trainer reused from cache in ')
  assert set(handler.seconds) == {'ImportExampleGen', 'Trainer'}


def test_warnings_of_the_project_are_shown_and_library_chatter_is_not(quiet_log):
  handler, stream = quiet_log
  own = os.path.join(REPO_ROOT, 'components', 'pusher', 'executor.py')
  library = '/site-packages/tensorflow_model_analysis/api/model_eval_lib.py'
  absl_logging.info('Component %s is running.', 'OTAPusher')
  for record in (
      _record(logging.WARNING, 'OTAPusher: NOT pushing m: model is NOT_BLESSED', own),
      _record(logging.WARNING, 'tensorflow_model_analysis is deprecated-ish', library),
      _record(logging.INFO, 'OTAPusher: pushed digits version 3', own),
      _record(logging.ERROR, 'a library failed loudly', library)):
    handler.handle(record)
  warnings.warn('a FutureWarning from some library', FutureWarning)  # Captured, then dropped.
  logging.getLogger('tensorflow').warning('TensorFlow chatter')

  assert stream.getvalue().splitlines() == [
      'WARNING (OTAPusher): OTAPusher: NOT pushing m: model is NOT_BLESSED',
      'ERROR (OTAPusher): a library failed loudly',
  ]


def test_a_step_that_recorded_or_passed_on_a_failed_variant_does_not_say_done(quiet_log):
  handler, stream = quiet_log
  own = os.path.join(REPO_ROOT, 'components', 'common', 'finetune', 'executor.py')
  # The messages the executors log (components/common/finetune/executor.py).
  for node, message in (
      ('qat_trainer_pcqat', 'QATTrainer: recorded as a failed variant, the run goes on: x'),
      ('ptq_converter_pcqat', 'PTQConverter: /p is a failed variant (x); passed on without '
       'work.'),
      ('ptq_converter_ptq', None)):
    absl_logging.info('Component %s is running.', node)
    if message:
      handler.handle(_record(logging.WARNING, message, own))
    absl_logging.info('Component %s is finished.', node)

  steps = [line for line in stream.getvalue().splitlines() if line.startswith('[')]
  assert steps[0].startswith('[1/3] qat_trainer_pcqat FAILED (recorded; the run goes on) in ')
  assert steps[1].startswith('[2/3] ptq_converter_pcqat skipped (its variant failed earlier) in ')
  assert steps[2].startswith('[3/3] ptq_converter_ptq done in ')


def test_quiet_takes_over_the_root_logger(quiet_log):
  handler, _ = quiet_log
  root = logging.getLogger()
  # pytest adds its own capture handlers around each test; nothing else may print.
  assert [h for h in root.handlers if not type(h).__module__.startswith('_pytest')] == [handler]
  assert root.level == logging.INFO
  assert logging.getLogger('tensorflow').propagate
