"""Runs the pipeline on this machine: `python -m pipelines.run_local --runner local|beam`.

Both runners execute the same create_pipeline(...): LocalDagRunner runs the components one by
one in this process; BeamDagRunner schedules them as a Beam pipeline. Inside, the Beam-powered
components (ExampleGen, PTQConverter, Evaluator) use the DirectRunner with --beam-arg flags.

The console gets one line per finished step, the project's warnings and the summary; the full
log (every Python record, and what TensorFlow's C++ runtime writes to stderr) goes to
<output-dir>/run.log. `--verbose` prints everything on the console instead.
"""
import argparse
import os
import sys
import tempfile
import time
from typing import List, Optional
import warnings

from pipelines import progress

_EARLY_STDERR = None
if __name__ == '__main__' and '--verbose' not in sys.argv[1:]:
  # Decided before TensorFlow loads (below, through TFX), since it reads its log level and
  # starts writing to stderr at import: INFO and WARNING lines off, the rest to the run's log,
  # and the deprecation notices of libraries, meant for their developers, off.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  warnings.filterwarnings('ignore', category=FutureWarning)
  warnings.filterwarnings('ignore', category=DeprecationWarning)
  _EARLY_STDERR = progress.StderrToFile(
      os.path.join(tempfile.gettempdir(), f'tfx-edge-run-{os.getpid()}.log'))

from tfx import v1 as tfx  # noqa: E402  pylint: disable=g-import-not-at-top

from components import FineTuneConfig  # noqa: E402
from components.common import modes  # noqa: E402
from components.errors import ConfigError  # noqa: E402
from components.gate import DEFAULT_MAX_ACCURACY_DROP  # noqa: E402
from components.gate import DEFAULT_MAX_ERROR_INCREASE  # noqa: E402
from components.gate import DEFAULT_MIN_ACCURACY  # noqa: E402
from components.ota import repository  # noqa: E402
from components.ptq_converter.calibration import DEFAULT_CALIBRATION_SAMPLES  # noqa: E402
from pipelines import data  # noqa: E402
from pipelines import pipeline as pipeline_lib  # noqa: E402
from pipelines import summary  # noqa: E402

# Small data on a small machine: one in-process worker is the fastest DirectRunner setting.
DEFAULT_BEAM_ARGS = ['--direct_running_mode=in_memory', '--direct_num_workers=1']


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--runner', choices=('local', 'beam'), default='local',
                      help='LocalDagRunner or BeamDagRunner (default: local).')
  parser.add_argument('--output-dir', default='demo_output',
                      help='data/, pipeline_root/, metadata.sqlite, ota_repository/ and '
                      'ota_keys/ go here.')
  parser.add_argument('--pipeline-name', default='tfx_edge_digits')
  parser.add_argument('--model-name', default=pipeline_lib.DEFAULT_MODEL_NAME,
                      help='name the model is pushed under.')
  parser.add_argument('--channel', default=repository.DEFAULT_CHANNEL,
                      help='OTA release channel.')
  parser.add_argument('--variants', default=None,
                      help='comma-separated variants to build (default: ptq with --model-format '
                      'saved_model, else all of '
                      f'{",".join(pipeline_lib.VARIANTS)}).')
  pipeline_lib.add_data_arguments(parser, default_data=None)
  pipeline_lib.add_selection_arguments(parser)
  pipeline_lib.add_optimization_arguments(parser)
  pipeline_lib.add_release_arguments(parser)
  parser.add_argument('--train-steps', type=int, default=pipeline_lib.DEFAULT_TRAIN_STEPS)
  parser.add_argument('--finetune-epochs', type=int, default=None,
                      help='fine-tuning epochs of every optimizer (default: each one\'s own, 10 '
                      'for the Pruner, 3 for the Clusterer and QATTrainer).')
  parser.add_argument('--finetune-steps', type=int, default=FineTuneConfig.steps_per_epoch,
                      help='fine-tuning steps per epoch of every optimizer.')
  parser.add_argument('--finetune-learning-rate', type=float, default=None,
                      help='peak fine-tuning learning rate of every optimizer (default: each '
                      "one's own, 1e-3 for the Pruner and Clusterer, 1e-4 for QATTrainer).")
  parser.add_argument('--calibration-samples', type=int, default=DEFAULT_CALIBRATION_SAMPLES)
  parser.add_argument('--int8-io', choices=(modes.IO_NATIVE, modes.IO_FLOAT32),
                      default=modes.IO_NATIVE,
                      help='int8 model I/O: native (int8 tensors) or float32.')
  parser.add_argument('--min-accuracy', type=float, default=DEFAULT_MIN_ACCURACY,
                      help='gate: lowest accepted int8 accuracy.')
  parser.add_argument('--max-accuracy-drop', type=float, default=DEFAULT_MAX_ACCURACY_DROP,
                      help='gate: largest accepted absolute drop vs the float32 baseline.')
  parser.add_argument('--max-error-increase', type=float, default=DEFAULT_MAX_ERROR_INCREASE,
                      help='regression gate: largest relative increase of the mean absolute '
                      'error vs the float32 baseline.')
  parser.add_argument('--max-error', type=float, default=None,
                      help='regression gate: largest accepted mean absolute error (default: no '
                      'bound).')
  parser.add_argument('--enable-cache', action='store_true',
                      help='reuse outputs of unchanged steps from earlier runs.')
  parser.add_argument('--beam-arg', action='append', default=None, dest='beam_args',
                      help=f'Beam pipeline argument (repeatable); default {DEFAULT_BEAM_ARGS}.')
  parser.add_argument('--verbose', action='store_true',
                      help='print the full TFX/Beam/TensorFlow log instead of one line per step.')
  return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  paths = pipeline_lib.demo_paths(args.output_dir)
  data_kwargs = pipeline_lib.data_kwargs(args)
  if args.data is None:  # The demo: the digits that scikit-learn ships, as tf.Examples.
    data.export_digits(paths['data_root'])
  data_root = os.path.abspath(args.data) if args.data else paths['data_root']
  ota = repository.OTARepository(paths['ota_repository'], paths['ota_keys_dir'])
  if not os.path.exists(os.path.join(ota.metadata_dir, 'timestamp.json')):
    ota.init()  # The demo's own repository and keys; in production, `tfx-edge ota init` once.

  pipeline = pipeline_lib.create_pipeline(
      pipeline_name=args.pipeline_name,
      pipeline_root=paths['pipeline_root'],
      data_root=data_root,
      **data_kwargs,
      ota_repository=paths['ota_repository'],
      ota_keys_dir=paths['ota_keys_dir'],
      model_name=args.model_name,
      channel=args.channel,
      variants=pipeline_lib.variants_of(args.variants),
      **pipeline_lib.selection_kwargs(args),
      **pipeline_lib.optimization_kwargs(args),
      **pipeline_lib.release_kwargs(args),
      fine_tuning=FineTuneConfig(epochs=args.finetune_epochs,
                                 steps_per_epoch=args.finetune_steps,
                                 learning_rate=args.finetune_learning_rate),
      train_steps=args.train_steps,
      calibration_samples=args.calibration_samples,
      int8_io=args.int8_io,
      min_accuracy=args.min_accuracy,
      max_accuracy_drop=args.max_accuracy_drop,
      max_error_increase=args.max_error_increase,
      max_error=args.max_error,
      beam_pipeline_args=args.beam_args or DEFAULT_BEAM_ARGS,
      metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
          paths['metadata_path']),
      enable_cache=args.enable_cache)

  if args.verbose:
    progress.verbose()
    print(f'Running {len(pipeline.components)} steps with the {args.runner} runner.', flush=True)
  else:
    stderr = _EARLY_STDERR or progress.StderrToFile(paths['run_log'])
    stderr.move_to(paths['run_log'])
    progress.quiet(len(pipeline.components), log_path=paths['run_log'])
    print(f'Running {len(pipeline.components)} steps with the {args.runner} runner; full log: '
          f'{paths["run_log"]} (--verbose prints it here).', flush=True)
  start = time.monotonic()
  try:
    if args.runner == 'local':
      tfx.orchestration.LocalDagRunner().run(pipeline)
    else:
      from tfx.orchestration.beam.beam_dag_runner import BeamDagRunner  # pylint: disable=g-import-not-at-top
      BeamDagRunner().run(pipeline)
  except BaseException:
    if not args.verbose:
      stderr.restore()  # The traceback goes to the console, after a pointer to the details.
      print(f'\nThe run failed; the full log is in {paths["run_log"]}.', file=sys.stderr)
    raise
  elapsed = time.monotonic() - start
  if not args.verbose:
    stderr.restore()

  rows = summary.summarize(paths['metadata_path'], args.pipeline_name)
  print(f'\nPipeline {args.pipeline_name!r} finished with the {args.runner} runner in '
        f'{elapsed:.0f}s.\n')
  print(summary.format_table(rows))
  print()
  regression = summary.regression_outcome(paths['metadata_path'], args.pipeline_name)
  if regression:
    print(f'RegressionGate: {regression}')
  print(f'OTAPusher: {summary.push_outcome(paths["metadata_path"], args.pipeline_name)}')
  print(summary.format_gate_share(summary.node_seconds(paths['metadata_path'],
                                                       args.pipeline_name)))
  report = summary.selection_report(paths['metadata_path'], args.pipeline_name)
  if report:
    print(f'\nVariant selection report (Pareto front, why each variant won or lost, beside the '
          f'released model): {report}')
  regression_page = summary.regression_report(paths['metadata_path'], args.pipeline_name)
  if regression_page:
    print(f'Regression gate report (the candidate beside the released model, per slice): '
          f'{regression_page}')
  print(f'\nArtifacts: {paths["pipeline_root"]}\nML Metadata: {paths["metadata_path"]}\n'
        f'OTA repository: {paths["ota_repository"]} (keys: {paths["ota_keys_dir"]})\n'
        'Serve it and fetch the model as a device would:\n'
        f'  python -m http.server 8000 --directory {paths["ota_repository"]} &\n'
        f'  .venv/bin/tfx-edge ota fetch --url http://127.0.0.1:8000 --trusted-root '
        f'{paths["ota_repository"]}/metadata/1.root.json --name {args.model_name} '
        '--dest device/')
  return 0


if __name__ == '__main__':
  try:
    sys.exit(main())
  except ConfigError as e:  # A bad flag value: say which, as argparse does, without a traceback.
    if _EARLY_STDERR:
      _EARLY_STDERR.discard()  # Only TensorFlow's import-time lines: the run never started.
    print(f'run_local: error: {e}', file=sys.stderr)
    sys.exit(2)
