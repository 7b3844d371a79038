"""The one create_pipeline(...) that every runner (local, Beam, Kubeflow) uses."""
import argparse
import dataclasses
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

from absl import logging
import tensorflow as tf
from tfx import v1 as tfx
from tfx.proto import example_gen_pb2
from tfx.utils import import_utils

from components import Budgets
from components import Clusterer
from components import ClusteringConfig
from components import DeviceBenchmarker
from components import FineTuneConfig
from components import GateExamplesGen
from components import MeasureSettings
from components import OTAPusher
from components import PTQConverter
from components import Pruner
from components import PruningConfig
from components import QATConfig
from components import QATTrainer
from components import RegressionGate
from components import VariantSelector
from components.benchmarker import targets
from components.common import device_extractors
from components.common import evaluator_guard
from components.common import model_io
from components.common.finetune import config as finetune_config
from components.common import modes
from components.common import validation
from components.errors import ConfigError
from components.common import tasks
from components.gate import DEFAULT_MAX_ACCURACY_DROP
from components.gate import DEFAULT_MAX_ERROR_INCREASE
from components.gate import DEFAULT_MIN_ACCURACY
from components.gate import gate_config
from components.gate import schema as gate_schema
from components.ota.repository import DEFAULT_CHANNEL
from components.ptq_converter import auto
from components.ptq_converter.calibration import DEFAULT_CALIBRATION_SAMPLES
from components.regression_gate import regression
from components.selector import selection
from pipelines import data

DEFAULT_RUN_FN = 'pipelines.digits_module.run_fn'
DEFAULT_INPUT_FN = 'pipelines.digits_module.input_fn'
DEFAULT_MODEL_NAME = 'digits'
DEFAULT_TRAIN_STEPS = 600
DEFAULT_EVAL_STEPS = 10
# The optimizers' defaults in the pipeline: 80% zeros reached by 60% of fine-tuning (the rest
# recovers accuracy), and 16 clusters.
DEFAULT_PRUNING = PruningConfig(target_sparsity=0.8, end=0.6)
DEFAULT_CLUSTERING = ClusteringConfig(number_of_clusters=16)
# The quantization modes a variant's int8 model can be made with.
INT8_MODES = (modes.INT8, modes.INT8_FLOAT_FALLBACK, modes.INT8_AUTO)
# The demo's device: a small phone-class budget the digits variants fit, measured at 1 and 2
# threads for half a second each. create_pipeline's own defaults are no budgets at all.
DEMO_BUDGETS = Budgets(max_p90_ms=5.0, max_gzip_bytes=64 * 1024, max_peak_memory_mb=32.0)
DEMO_BENCHMARK_SETTINGS = MeasureSettings(threads=(1, 2), min_duration_s=0.5)

# The model variants the pipeline can build; each is converted to int8 and gated by TFMA.
PTQ = 'ptq'  # PTQ int8 of the trained model
PRUNED = 'pruned'  # Pruner -> int8
CLUSTERED = 'clustered'  # Clusterer -> int8
PCQAT = 'pcqat'  # Pruner -> Clusterer -> QATTrainer (prune-and-cluster-preserving) -> int8
VARIANTS = (PTQ, PRUNED, CLUSTERED, PCQAT)

# Formats of the data directory (create_pipeline's data_format): tf.Example TFRecord files
# (ImportExampleGen) or CSV files with a header row (CsvExampleGen); `auto` looks at the files.
TFRECORD = 'tfrecord'
CSV = 'csv'
AUTO = 'auto'
DATA_FORMATS = (AUTO, TFRECORD, CSV)

# A module-file attribute: the tf.io feature spec its input_fn parses with. Its FixedLenFeature
# default values are what input_fn fills missing features with, so the runners take the gate's
# fill_missing from it.
FEATURE_SPEC_NAME = 'FEATURE_SPEC'

# What the Trainer saves (create_pipeline's model_format).
MODEL_FORMATS = (model_io.KERAS, model_io.SAVED_MODEL)

# Node ids, shared with the summary that reads the run back from ML Metadata.
EXAMPLE_GEN = 'ImportExampleGen'
CSV_EXAMPLE_GEN = 'CsvExampleGen'
REGRESSION_GATE = 'RegressionGate'
GATE_EXAMPLES = 'GateExamplesGen'
TRAINER = 'Trainer'
PTQ_FLOAT32 = 'ptq_float32'
PRUNER = 'Pruner'
CLUSTERER = 'Clusterer'
PCQAT_CLUSTERER = 'Clusterer_after_Pruner'
QAT_TRAINER = 'QATTrainer'
SELECTOR = 'VariantSelector'
PUSHER = 'OTAPusher'


def int8_node(variant: str) -> str:
  return f'{variant}_int8'


def evaluator_node(variant: str) -> str:
  return f'{variant}_evaluator'


def benchmark_node(variant: str) -> str:
  return f'{variant}_benchmark'


def create_pipeline(
    pipeline_name: str,
    pipeline_root: str,
    data_root: str,
    ota_repository: str,
    ota_keys_dir: str,
    *,
    data_format: str = AUTO,
    model_format: str = model_io.KERAS,
    variants: Optional[Sequence[str]] = None,
    prefer: str = selection.PREFER_SIZE,
    budgets: Budgets = Budgets(),
    benchmark_settings: MeasureSettings = MeasureSettings(),
    benchmark_target: str = targets.HOST,
    model_name: str = DEFAULT_MODEL_NAME,
    channel: str = DEFAULT_CHANNEL,
    run_fn: Optional[str] = DEFAULT_RUN_FN,
    module_file: Optional[str] = None,
    input_fn: Optional[str] = DEFAULT_INPUT_FN,
    train_steps: int = DEFAULT_TRAIN_STEPS,
    eval_steps: int = DEFAULT_EVAL_STEPS,
    label_key: str = data.LABEL_KEY,
    task: str = tasks.MULTICLASS,
    fill_missing: Optional[Mapping[str, float]] = None,
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    int8_io: str = modes.IO_NATIVE,
    int8_mode: str = modes.INT8,
    allowed_modes: Sequence[str] = modes.DEFAULT_ALLOWED_MODES,
    int8_auto_budget: float = auto.DEFAULT_FALLBACK_BUDGET,
    min_accuracy: float = DEFAULT_MIN_ACCURACY,
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP,
    max_error_increase: float = DEFAULT_MAX_ERROR_INCREASE,
    max_error: Optional[float] = None,
    fine_tuning: Optional[FineTuneConfig] = None,
    pruning: Optional[PruningConfig] = None,
    clustering: Optional[ClusteringConfig] = None,
    qat: Optional[QATConfig] = None,
    regression_gate: bool = True,
    max_regression: float = regression.DEFAULT_MAX_REGRESSION,
    max_slice_regression: float = regression.DEFAULT_MAX_SLICE_REGRESSION,
    slicing_features: Sequence[str] = (),
    slicing_specs: Sequence[Any] = (),
    slice_noise_z: float = regression.SLICE_Z,
    released_trusted_root: Optional[str] = None,
    require_approval: bool = False,
    rollout_percent: int = 100,
    beam_pipeline_args: Optional[List[str]] = None,
    metadata_connection_config=None,
    enable_cache: bool = False,
) -> tfx.dsl.Pipeline:
  """Trainer -> optimizers -> int8 -> Evaluator and DeviceBenchmarker per variant -> pick -> push.

  Every variant's int8 model is gated by its own Evaluator against one float32 TFLite baseline
  of the trained model and measured by its own DeviceBenchmarker against the budgets. The
  VariantSelector picks, among the variants that pass both, the best by `prefer`; the
  RegressionGate then compares that model with the one released on the channel (fetched from
  the OTA repository through TUF), and only a model that passes both gates goes to OTAPusher.

  Args:
    pipeline_name: name in ML Metadata.
    pipeline_root: where artifacts are written (local path or URI).
    data_root: directory of the data: tf.Example TFRecord files (ImportExampleGen) or CSV files
      with a header row (CsvExampleGen; an empty cell is a missing value).
    ota_repository: the TUF repository the blessed int8 model is published to.
    ota_keys_dir: directory of its signing keys (a mounted Secret on Kubernetes).
    data_format: `tfrecord`, `csv`, or `auto` (default): CSV when data_root holds *.csv files.
    model_format: what the Trainer saves: `tf_keras` (a Functional or Sequential model, every
      variant) or `saved_model` (a Keras 3 model, a tf.Module, a subclassed model: only PTQ,
      which converts from the serving signature; tensorflow-model-optimization needs tf_keras).
    variants: which of VARIANTS to build (default: all for tf_keras, `ptq` for saved_model).
    prefer: how the selector ranks eligible variants: `size` (gzip payload), `latency`, `accuracy`.
    budgets: the device budgets every variant must fit (default: none).
    benchmark_settings: thread counts and run lengths of the DeviceBenchmarkers.
    benchmark_target: where the DeviceBenchmarkers measure (`host`).
    model_name: name the model is published under.
    channel: OTA release channel.
    run_fn: import path of the Trainer's run_fn (works offline and in containers), or None to
      use `module_file`.
    module_file: path of a module file with run_fn and input_fn, used when run_fn/input_fn are
      None.
    input_fn: import path of the module's input_fn, used by the fine-tuning components and to
      read the calibration samples.
    train_steps: Trainer training steps.
    eval_steps: Trainer evaluation steps.
    label_key: label feature (stratifies calibration and feeds the gate's metric).
    task: what the model predicts, which decides the gate's metric: `multiclass` (2+ output
      units), `binary` (one sigmoid unit), `binary_logits` (one linear unit, a logit; the
      optimizers then fine-tune with binary cross-entropy from logits), `multilabel` (a sigmoid
      unit per label, multi-hot labels), `multilabel_logits` (a logit per label) or
      `regression`. A task
      that does not fit the model's output makes the benchmarker and the pusher refuse every
      variant, with the reason.
    fill_missing: {feature: value} the gates fill in where an eval example lacks a model
      input: the values the module's input_fn fills them with. Default none: the GateExamplesGen
      step refuses data with missing values, naming the features and counts.
    calibration_samples: calibration examples sampled by Beam for int8.
    int8_io: input/output type of the int8 models: `native` (int8) or `float32`.
    int8_mode: how every variant is quantized: `int8` (integer-only, what int8-only devices run),
      `int8_float_fallback` (ops without an int8 kernel stay float) or `int8_auto` (the fewest
      layers in float that keep the accuracy within max_accuracy_drop on the eval split).
    allowed_modes: the modes OTAPusher may publish; int8_mode must be one of them (default:
      int8 only).
    int8_auto_budget: int8_auto's largest share of layers kept in float, in (0, 1].
    min_accuracy: the gates' value threshold on int8 accuracy.
    max_accuracy_drop: the gates' change threshold: largest absolute accuracy drop vs float32.
    max_error_increase: regression gates: largest relative increase of the mean absolute error
      vs float32.
    max_error: regression gates: largest accepted mean absolute error, or None.
    fine_tuning: fine-tuning of every optimizer (default FineTuneConfig()).
    pruning: the Pruner's configuration (default DEFAULT_PRUNING: 80% sparsity, reached at 60%
      of fine-tuning).
    clustering: the Clusterers' configuration (default DEFAULT_CLUSTERING: 16 clusters).
    qat: the QATTrainer's configuration (default QATConfig(): the scheme from the history).
    regression_gate: compare the selected model with the released one before pushing (default
      on; the first release of a name passes with the reason recorded).
    max_regression: regression gate: largest overall drop accepted against the released model
      (accuracy as a fraction, 0.0 = none; a relative error increase for `regression`).
    max_slice_regression: regression gate: the same per slice (default 0.02 = 2 points).
    slicing_features: regression gate: features to slice by, besides the label classes.
    slicing_specs: regression gate: more slices, each a tfma.SlicingSpec or its JSON form
      (feature crosses, one value, SQL); see RegressionGate.
    slice_noise_z: regression gate: standard errors of sampling noise a slice's drop beyond
      max_slice_regression may be and still pass (default 1.645); 0 takes it literally.
    released_trusted_root: regression gate: the root.json devices trust (default: the
      repository's metadata/1.root.json).
    require_approval: publish as a pending release that devices install only after
      `tfx-edge ota approve`.
    rollout_percent: share of devices (1-100) the release goes to at first.
    beam_pipeline_args: arguments for every Beam-powered component (ExampleGen, PTQConverter,
      Evaluator), for example a distributed runner's flags.
    metadata_connection_config: ML Metadata connection; the runner supplies it.
    enable_cache: reuse outputs of unchanged steps from earlier runs.

  Returns:
    The TFX pipeline.
  """
  if (run_fn is None) == (module_file is None):
    raise ConfigError(f'give exactly one of run_fn={run_fn!r} and module_file={module_file!r}.')
  validation.positive_int('train_steps', train_steps)
  validation.positive_int('eval_steps', eval_steps)
  if model_format not in MODEL_FORMATS:
    raise ConfigError(f'model_format={model_format!r} is not accepted; accepted: '
                      f'{", ".join(MODEL_FORMATS)}.')
  if model_format == model_io.SAVED_MODEL:
    optimized = [v for v in variants or () if v != PTQ]
    if optimized:
      raise ConfigError(
          f'variants {optimized} need a tf_keras Functional or Sequential model, but '
          f'model_format={model_format!r}: tensorflow-model-optimization cannot prune, cluster '
          f'or quantization-aware train it. {model_io.PTQ_ONLY_ROUTE}')
    if variants is None:
      logging.info('create_pipeline: model_format=%r, so only the %r variant is built: the '
                   'optimizers need a tf_keras Functional or Sequential model.', model_format, PTQ)
    variants = (PTQ,)
  variants = VARIANTS if variants is None else variants
  unknown = [v for v in variants if v not in VARIANTS]
  if unknown or not variants or len(set(variants)) != len(variants):
    raise ConfigError(f'variants={list(variants)!r} is not accepted: give distinct names from '
                      f'{", ".join(VARIANTS)}.')
  if int8_mode not in INT8_MODES:
    raise ConfigError(f'int8_mode={int8_mode!r} is not accepted; accepted: '
                      f'{", ".join(INT8_MODES)}.')
  modes.validate_mode(int8_mode, int8_io)
  modes.validate_allowed_modes(allowed_modes)
  if int8_mode not in allowed_modes:
    raise ConfigError(
        f'int8_mode={int8_mode!r} is not in allowed_modes={list(allowed_modes)!r}: the pusher '
        f'would refuse every variant. Add {int8_mode!r} to allowed_modes if your devices run '
        f'float ops, or quantize with {modes.INT8!r}.')
  int8_auto = None
  if int8_mode == modes.INT8_AUTO:
    if task == tasks.REGRESSION:
      raise ConfigError(f'int8_mode={modes.INT8_AUTO!r} is not accepted with task='
                        f'{tasks.REGRESSION!r}: its accuracy tolerance is max_accuracy_drop, an '
                        'accuracy share; use int8 or int8_float_fallback.')
    # The tolerance is the gate's, so the model it keeps is one the gate passes.
    int8_auto = auto.AutoConfig(max_drop=max_accuracy_drop, fallback_budget=int8_auto_budget,
                                task=task)
  fill_missing = gate_schema.validate_fill_missing(fill_missing)
  fine_tuning = fine_tuning or FineTuneConfig()
  if task in tasks.LOGIT_TASKS and fine_tuning.loss == finetune_config.AUTO_LOSS:
    # Linear units look like a regression's or multi-class logits: only the task says they are
    # binary logits.
    fine_tuning = dataclasses.replace(
        fine_tuning, loss=finetune_config.BINARY_CROSSENTROPY_FROM_LOGITS)
  pruning = pruning or DEFAULT_PRUNING
  clustering = clustering or DEFAULT_CLUSTERING
  user_code = {'input_fn': input_fn} if input_fn else {'module_file': module_file}

  example_gen = _example_gen(data_root, data_format)
  examples = example_gen.outputs['examples']

  trainer_source = {'run_fn': run_fn} if run_fn else {'module_file': module_file}
  trainer = tfx.components.Trainer(
      examples=examples,
      train_args=tfx.proto.TrainArgs(num_steps=train_steps),
      eval_args=tfx.proto.EvalArgs(num_steps=eval_steps),
      **trainer_source).with_id(TRAINER)
  trained = trainer.outputs['model']
  components = [example_gen, trainer]

  # TFMA cannot mix TFLite and SavedModel models in one evaluation: the baseline is float32 TFLite.
  ptq_float32 = PTQConverter(model=trained, mode=modes.FLOAT32).with_id(PTQ_FLOAT32)
  # Every variant has the baseline's inputs: one pass makes the eval split the gates can feed
  # them all, missing values filled as input_fn fills them (or refused, with counts).
  gate_examples = GateExamplesGen(
      examples=examples, model=ptq_float32.outputs['tflite_model'], label_key=label_key,
      fill_missing=fill_missing, task=task).with_id(GATE_EXAMPLES)
  components += [ptq_float32, gate_examples]
  gate = gate_config(label_key, task, min_accuracy=min_accuracy,
                     max_accuracy_drop=max_accuracy_drop, max_error_increase=max_error_increase,
                     max_error=max_error)

  # With several variants, one whose optimizer or conversion fails is recorded as failed (with
  # its reason) and the run goes on with the others; a single variant fails the run as before.
  record_failure = len(variants) > 1
  optimizer_args = dict(examples=examples, fine_tuning=fine_tuning,
                        record_failure=record_failure, **user_code)
  pruner = None
  if PRUNED in variants or PCQAT in variants:
    pruner = Pruner(model=trained, pruning=pruning, **optimizer_args).with_id(PRUNER)
    components.append(pruner)
  sources = {PTQ: trained}
  if PRUNED in variants:
    sources[PRUNED] = pruner.outputs['optimized_model']
  if CLUSTERED in variants:
    clusterer = Clusterer(model=trained, clustering=clustering, **optimizer_args).with_id(CLUSTERER)
    components.append(clusterer)
    sources[CLUSTERED] = clusterer.outputs['optimized_model']
  if PCQAT in variants:
    # The Clusterer preserves the Pruner's zeros; QATTrainer picks PCQAT from that history.
    pruned_clusterer = Clusterer(model=pruner.outputs['optimized_model'], clustering=clustering,
                                 **optimizer_args).with_id(PCQAT_CLUSTERER)
    qat_trainer = QATTrainer(model=pruned_clusterer.outputs['optimized_model'], qat=qat,
                             **optimizer_args).with_id(QAT_TRAINER)
    components += [pruned_clusterer, qat_trainer]
    sources[PCQAT] = qat_trainer.outputs['optimized_model']

  candidates = {}
  for variant in variants:
    int8 = PTQConverter(
        model=sources[variant],
        examples=examples,
        mode=int8_mode,
        inference_io=int8_io,
        calibration_samples=calibration_samples,
        label_key=label_key,
        record_failure=record_failure,
        int8_auto=int8_auto,
        # Calibration reads the sample through the module's input_fn, as training did.
        **user_code).with_id(int8_node(variant))
    # The TFX Evaluator, refusing a failed variant without evaluating it.
    evaluator = evaluator_guard.Evaluator(
        examples=gate_examples.outputs['gate_examples'],
        model=int8.outputs['tflite_model'],
        baseline_model=ptq_float32.outputs['tflite_model'],
        schema=gate_examples.outputs['schema'],
        eval_config=gate,
        # Inputs quantized as the device quantizes them (TFMA alone truncates).
        module_path=device_extractors.MODULE_PATH).with_id(evaluator_node(variant))
    benchmarker = DeviceBenchmarker(
        model=int8.outputs['tflite_model'],
        model_blessing=evaluator.outputs['blessing'],
        evaluation=evaluator.outputs['evaluation'],
        target=benchmark_target,
        settings=benchmark_settings,
        budgets=budgets,
        variant=variant).with_id(benchmark_node(variant))
    components += [int8, evaluator, benchmarker]
    candidates[variant] = (int8.outputs['tflite_model'], benchmarker.outputs['benchmark'])

  selector = VariantSelector(candidates=candidates, prefer=prefer).with_id(SELECTOR)
  components.append(selector)
  release_gate = {}
  if regression_gate:
    released_gate = RegressionGate(
        model=selector.outputs['model'],
        model_blessing=selector.outputs['blessing'],
        examples=gate_examples.outputs['gate_examples'],
        schema=gate_examples.outputs['schema'],
        # The selection report is written again with the released model's row.
        selection=selector.outputs['selection'],
        repository_dir=ota_repository,
        trusted_root=released_trusted_root,
        model_name=model_name,
        channel=channel,
        label_key=label_key,
        task=task,
        max_regression=max_regression,
        max_slice_regression=max_slice_regression,
        slicing_features=slicing_features,
        slicing_specs=list(slicing_specs),
        slice_noise_z=slice_noise_z).with_id(REGRESSION_GATE)
    components.append(released_gate)
    release_gate = {'regression_blessing': released_gate.outputs['blessing']}
  pusher = OTAPusher(
      model=selector.outputs['model'],
      model_blessing=selector.outputs['blessing'],
      repository_dir=ota_repository,
      keys_dir=ota_keys_dir,
      model_name=model_name,
      channel=channel,
      allowed_modes=allowed_modes,
      require_approval=require_approval,
      rollout_percent=rollout_percent,
      # The device's health check runs the first eval example, fed as the gate fed it.
      examples=gate_examples.outputs['gate_examples'],
      **release_gate).with_id(PUSHER)
  components.append(pusher)

  return tfx.dsl.Pipeline(
      pipeline_name=pipeline_name,
      pipeline_root=pipeline_root,
      components=components,
      enable_cache=enable_cache,
      metadata_connection_config=metadata_connection_config,
      beam_pipeline_args=beam_pipeline_args or [])


def data_format_of(data_root: str, data_format: str = AUTO) -> str:
  """The format of the data directory: data_format, or with `auto` csv when it holds *.csv files.

  Otherwise `auto` means tfrecord, also for a directory that does not exist where the pipeline
  is built (a bucket, or a path inside the image).

  Raises:
    ConfigError: an unknown format.
  """
  if data_format not in DATA_FORMATS:
    raise ConfigError(f'data_format={data_format!r} is not accepted; accepted: '
                      f'{", ".join(DATA_FORMATS)}.')
  if data_format != AUTO:
    return data_format
  try:
    csv_files = tf.io.gfile.glob(os.path.join(data_root, '*.csv'))
  except tf.errors.OpError:  # A filesystem this machine cannot reach.
    csv_files = []
  return CSV if csv_files else TFRECORD


def _example_gen(data_root: str, data_format: str):
  """ExampleGen for the data directory: train and eval splits hashed 4:1."""
  output_config = example_gen_pb2.Output(
      split_config=example_gen_pb2.SplitConfig(splits=[
          example_gen_pb2.SplitConfig.Split(name='train', hash_buckets=4),
          example_gen_pb2.SplitConfig.Split(name='eval', hash_buckets=1),
      ]))
  if data_format_of(data_root, data_format) == CSV:
    return tfx.components.CsvExampleGen(
        input_base=data_root, output_config=output_config).with_id(CSV_EXAMPLE_GEN)
  return tfx.components.ImportExampleGen(
      input_base=data_root, output_config=output_config).with_id(EXAMPLE_GEN)


def demo_paths(output_dir: str) -> dict:
  """Where the demo keeps its data, artifacts, metadata, OTA repository, signing keys and log."""
  output_dir = os.path.abspath(output_dir)
  return {
      'data_root': os.path.join(output_dir, 'data'),
      'pipeline_root': os.path.join(output_dir, 'pipeline_root'),
      'metadata_path': os.path.join(output_dir, 'metadata.sqlite'),
      'ota_repository': os.path.join(output_dir, 'ota_repository'),
      'ota_keys_dir': os.path.join(output_dir, 'ota_keys'),
      'run_log': os.path.join(output_dir, 'run.log'),
  }


def add_selection_arguments(parser: argparse.ArgumentParser) -> None:
  """The benchmark, budget and selection flags that run_local and run_kubeflow share."""
  parser.add_argument('--prefer', choices=selection.PREFERENCES, default=selection.PREFER_SIZE,
                      help='how the selector ranks the variants that pass the gate and budgets.')
  parser.add_argument('--bench-threads',
                      default=','.join(map(str, DEMO_BENCHMARK_SETTINGS.threads)),
                      help='comma-separated thread counts the DeviceBenchmarkers measure.')
  parser.add_argument('--bench-min-duration', type=float,
                      default=DEMO_BENCHMARK_SETTINGS.min_duration_s,
                      help='seconds of timed runs per model and thread count.')
  parser.add_argument('--max-p90-ms', type=float, default=DEMO_BUDGETS.max_p90_ms,
                      help='latency budget (p90, ms).')
  parser.add_argument('--max-size-bytes', type=int, default=DEMO_BUDGETS.max_size_bytes,
                      help='.tflite size budget (none by default).')
  parser.add_argument('--max-gzip-bytes', type=int, default=DEMO_BUDGETS.max_gzip_bytes,
                      help='OTA payload budget (gzip bytes).')
  parser.add_argument('--max-memory-mb', type=float, default=DEMO_BUDGETS.max_peak_memory_mb,
                      help='peak memory budget (MB above the bare runtime).')


def add_data_arguments(parser: argparse.ArgumentParser, default_data: Optional[str]) -> None:
  """The flags that point run_local and run_kubeflow at the user's data and module.

  Args:
    parser: the runner's parser.
    default_data: the data directory without --data (None: the demo's digits, exported).
  """
  parser.add_argument('--data', '--data-root', default=default_data, dest='data',
                      help='directory of CSV files with a header row (CsvExampleGen) or of '
                      'tf.Example TFRecord files (ImportExampleGen); default: the digits demo. '
                      'Needs --module-file and --label-key.')
  parser.add_argument('--data-format', choices=DATA_FORMATS, default=AUTO,
                      help='format of --data; auto: csv when it holds *.csv files.')
  parser.add_argument('--model-format', choices=MODEL_FORMATS, default=model_io.KERAS,
                      help='what your run_fn saves: tf_keras (every variant) or saved_model '
                      '(Keras 3, tf.Module, subclassed: the ptq variant only).')
  parser.add_argument('--module-file', default=None,
                      help='your module with run_fn and input_fn (see docs/module_contract.md); '
                      'default: the digits module.')
  parser.add_argument('--label-key', default=data.LABEL_KEY,
                      help=f'the label feature (default {data.LABEL_KEY!r}, the digits\').')
  parser.add_argument('--task', choices=tasks.TASKS, default=tasks.MULTICLASS,
                      help='what the model predicts; decides the gate\'s metric (accuracy, '
                      'binary accuracy, mean absolute error).')
  parser.add_argument('--fill-missing', default='',
                      help='NAME=VALUE,...: the values your input_fn fills missing model inputs '
                      'with, which the gate fills in too (*=VALUE: every input). Default: the '
                      f'default_values of the module\'s {FEATURE_SPEC_NAME}, if it has one; else '
                      'missing values are refused.')


def data_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
  """create_pipeline keyword arguments from add_data_arguments' flags (except data_root).

  Raises:
    ConfigError: --data without --module-file, or a malformed --fill-missing.
  """
  fill_missing = {}
  for item in (i.strip() for i in args.fill_missing.split(',')):
    if not item:
      continue
    name, _, value = item.partition('=')
    try:
      fill_missing[name.strip()] = float(value)
    except ValueError:
      raise ConfigError(f'--fill-missing item {item!r} is not accepted: give NAME=NUMBER pairs '
                        'separated by commas (*=NUMBER for every input), e.g. age=38,*=0.'
                        ) from None
  if not fill_missing and args.module_file and os.path.exists(args.module_file):
    # The defaults the module's input_fn parses with are the values it fills in: the same for
    # the gate, from one definition.
    try:
      spec = import_utils.import_func_from_source(args.module_file, FEATURE_SPEC_NAME)
    except AttributeError:
      spec = None
    if spec:
      fill_missing = gate_schema.fill_missing_from_feature_spec(spec)
  user = {}
  if args.module_file:
    user = dict(module_file=args.module_file, run_fn=None, input_fn=None)
  elif args.data and (args.label_key != data.LABEL_KEY or
                     data_format_of(args.data, args.data_format) == CSV):
    # The digits module reads only digits-shaped TFRecords (wherever they are).
    raise ConfigError(f'--data {args.data!r} needs --module-file: your data needs your module '
                      '(run_fn and input_fn, see docs/module_contract.md) and --label-key.')
  return dict(data_format=args.data_format, model_format=args.model_format,
              label_key=args.label_key, task=args.task,
              fill_missing=fill_missing, **user)


def _slicing_spec(text: str) -> Dict[str, Any]:
  """--slice-spec's value: a JSON object (RegressionGate checks it is a SlicingSpec)."""
  try:
    spec = json.loads(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(f'{text!r} is not JSON ({e}); give a SlicingSpec object '
                                     'such as \'{"feature_keys": ["country"]}\'') from None
  if not isinstance(spec, dict):
    raise argparse.ArgumentTypeError(f'{text!r} is not a JSON object; give a SlicingSpec such '
                                     'as \'{"feature_values": {"country": "fr"}}\'')
  return spec


def add_release_arguments(parser: argparse.ArgumentParser) -> None:
  """The regression-gate and release flags that run_local and run_kubeflow share."""
  parser.add_argument('--max-regression', type=float, default=regression.DEFAULT_MAX_REGRESSION,
                      help='largest overall accuracy drop (fraction) accepted against the model '
                      'released on the channel (for --task regression: relative error increase).')
  parser.add_argument('--max-slice-regression', type=float,
                      default=regression.DEFAULT_MAX_SLICE_REGRESSION,
                      help='the same per slice (one slice per label class, and --slice-by).')
  parser.add_argument('--slice-noise-z', type=float, default=regression.SLICE_Z,
                      help='a slice whose drop exceeds --max-slice-regression by less than this '
                      'many standard errors of sampling noise passes; 0: no allowance.')
  parser.add_argument('--slice-by', default='',
                      help='comma-separated features the regression gate also slices by.')
  parser.add_argument('--slice-spec', action='append', type=_slicing_spec, default=[],
                      metavar='JSON',
                      help='a TFMA SlicingSpec the regression gate also slices by, as JSON '
                      '(repeatable): \'{"feature_keys": ["country", "device"]}\' (a slice per '
                      'pair of values) or \'{"feature_values": {"country": "fr"}}\' (one slice).')
  parser.add_argument('--released-trusted-root', default=None,
                      help='root.json devices trust, to verify the released model with '
                      '(default: the repository\'s metadata/1.root.json).')
  parser.add_argument('--no-regression-gate', action='store_true',
                      help='push without comparing with the released model.')
  parser.add_argument('--require-approval', action='store_true',
                      help='publish as a pending release: devices install it only after '
                      '`tfx-edge ota approve`.')
  parser.add_argument('--rollout-percent', type=int, default=100,
                      help='share of devices (1-100) the new release goes to at first.')


def release_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
  """create_pipeline keyword arguments from add_release_arguments' flags."""
  return dict(regression_gate=not args.no_regression_gate, max_regression=args.max_regression,
              max_slice_regression=args.max_slice_regression,
              slicing_features=[f.strip() for f in args.slice_by.split(',') if f.strip()],
              slicing_specs=args.slice_spec,
              slice_noise_z=args.slice_noise_z,
              released_trusted_root=args.released_trusted_root,
              require_approval=args.require_approval, rollout_percent=args.rollout_percent)


def variants_of(flag: Optional[str]) -> Optional[List[str]]:
  """create_pipeline's variants from a runner's comma-separated --variants (None: the default)."""
  return None if flag is None else [v for v in flag.split(',') if v]


def add_optimization_arguments(parser: argparse.ArgumentParser) -> None:
  """The quantization and optimizer flags that run_local and run_kubeflow share.

  They reach what the error messages suggest: a float fallback for ops without an int8 kernel,
  layers to skip, and QAT that leaves unsupported layers float.
  """
  parser.add_argument('--int8-mode', choices=INT8_MODES, default=modes.INT8,
                      help='how every variant is quantized; int8_float_fallback keeps ops with '
                      'no int8 kernel in float, int8_auto the fewest layers in float that keep '
                      'the accuracy (add either to --allowed-modes).')
  parser.add_argument('--int8-auto-budget', type=float, default=auto.DEFAULT_FALLBACK_BUDGET,
                      help='int8_auto: the largest share of layers kept in float, in (0, 1].')
  parser.add_argument('--allowed-modes', default=','.join(modes.DEFAULT_ALLOWED_MODES),
                      help='comma-separated modes the pusher may publish.')
  parser.add_argument('--sparsity', type=float, default=DEFAULT_PRUNING.target_sparsity,
                      help='the Pruner\'s target sparsity.')
  parser.add_argument('--clusters', type=int, default=DEFAULT_CLUSTERING.number_of_clusters,
                      help='the Clusterers\' number of clusters.')
  parser.add_argument('--skip-layers', default=None,
                      help='regex: layers whose names match are not pruned, clustered or '
                      'quantization-aware trained (default: none).')
  parser.add_argument('--qat-allow-float-layers', action='store_true',
                      help='QAT leaves layers it cannot quantize in float instead of failing.')


def optimization_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
  """create_pipeline keyword arguments from add_optimization_arguments' flags."""
  return dict(
      int8_mode=args.int8_mode,
      int8_auto_budget=args.int8_auto_budget,
      allowed_modes=[m for m in args.allowed_modes.split(',') if m],
      pruning=dataclasses.replace(DEFAULT_PRUNING, target_sparsity=args.sparsity,
                                  skip_layers=args.skip_layers),
      clustering=dataclasses.replace(DEFAULT_CLUSTERING, number_of_clusters=args.clusters,
                                     skip_layers=args.skip_layers),
      qat=QATConfig(skip_layers=args.skip_layers,
                    allow_float_layers=args.qat_allow_float_layers))


def selection_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
  """create_pipeline keyword arguments from add_selection_arguments' flags."""
  try:
    threads = tuple(int(t) for t in args.bench_threads.split(',') if t)
  except ValueError:
    raise ConfigError(f'--bench-threads={args.bench_threads!r} is not accepted: give '
                     'comma-separated positive integers, e.g. 1,2.') from None
  return dict(
      prefer=args.prefer,
      budgets=Budgets(max_p90_ms=args.max_p90_ms, max_size_bytes=args.max_size_bytes,
                      max_gzip_bytes=args.max_gzip_bytes, max_peak_memory_mb=args.max_memory_mb),
      benchmark_settings=MeasureSettings(threads=threads, min_duration_s=args.bench_min_duration))
