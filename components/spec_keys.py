"""Names the components share: spec keys, custom property names, their values, and file names.

One module, so that a producer and its consumers never disagree on a spelling. (Signing keys are
another matter: see components/ota/signing_keys.py.)
"""

# Channel and parameter keys of the component specs.
MODEL_KEY = 'model'
EXAMPLES_KEY = 'examples'
CALIBRATION_KEY = 'calibration'
MODEL_BLESSING_KEY = 'model_blessing'
EVALUATION_KEY = 'evaluation'
PUSHED_MODEL_KEY = 'pushed_model'
TFLITE_MODEL_KEY = 'tflite_model'

MODE_KEY = 'mode'
INFERENCE_IO_KEY = 'inference_io'
CALIBRATION_SPLIT_KEY = 'calibration_split'
CALIBRATION_SAMPLES_KEY = 'calibration_samples'
LABEL_KEY = 'label_key'
SEED_KEY = 'seed'
PUSH_DESTINATION_KEY = 'push_destination'
MODEL_NAME_KEY = 'model_name'
ALLOWED_MODES_KEY = 'allowed_modes'

# Custom properties written on output artifacts.
PROP_MODE = 'tfx_edge_mode'
PROP_INFERENCE_IO = 'tfx_edge_inference_io'
PROP_SIZE_BYTES = 'tfx_edge_size_bytes'
PROP_GZIP_SIZE_BYTES = 'tfx_edge_gzip_size_bytes'
PROP_INPUT_DTYPES = 'tfx_edge_input_dtypes'
PROP_OUTPUT_DTYPES = 'tfx_edge_output_dtypes'
# JSON {input tensor: dtype} of the inputs that take integers as such (int64, int32) in every
# mode: int8 I/O applies to the float inputs only; an integer input stays integer, cast and
# quantized inside the model.
PROP_INTEGER_INPUTS = 'tfx_edge_integer_inputs'
PROP_CALIBRATION_COUNT = 'tfx_edge_calibration_count'
PROP_CALIBRATION_SHA256 = 'tfx_edge_calibration_sha256'
PROP_MODEL_SHA256 = 'tfx_edge_model_sha256'
PROP_PUSHED = 'pushed'  # Same name as the standard TFX Pusher, so tooling that reads it works.
PROP_PUSHED_VERSION = 'pushed_version'  # A string, as the TFX Pusher writes it.
PROP_PUSHED_DESTINATION = 'pushed_destination'
PROP_PUSH_REASON = 'tfx_edge_push_reason'

# The standard TFX blessing property set by the Evaluator.
PROP_BLESSED = 'blessed'

# Files inside a converted Model artifact. TFMA and the TFX Evaluator load a TFLite model from the
# file named `tflite` in the serving model directory (Format-Serving); `model.tflite` is the same
# bytes under a name people and device tools expect.
TFLITE_FILE_NAME = 'tflite'
PLAIN_TFLITE_FILE_NAME = 'model.tflite'
CALIBRATION_SPLIT_NAME = 'calibration'

# Fine-tuning (Pruner, Clusterer, QATTrainer).
INPUT_FN_KEY = 'input_fn'
MODULE_FILE_KEY = 'module_file'  # Same name as TFX's, so its udf_utils can load the function.
FINE_TUNING_KEY = 'fine_tuning'  # JSON of FineTuneConfig.
OPTIMIZATION_KEY = 'optimization'  # JSON of the component's own config.
OPTIMIZED_MODEL_KEY = 'optimized_model'

# What optimizers did, carried from model to model (and onto PTQConverter's output), so a later
# step can pick its scheme and a report can show the whole chain.
PROP_HISTORY = 'tfx_edge_history'  # JSON list, e.g. ["prune", "cluster", "qat"]
PROP_SPARSITY = 'tfx_edge_sparsity'  # Overall fraction of zero weights in pruned layers.
PROP_SPARSITY_PER_LAYER = 'tfx_edge_sparsity_per_layer'  # JSON {layer: fraction}
PROP_SPARSITY_STRUCTURE = 'tfx_edge_sparsity_structure'  # One of the two values below.
UNSTRUCTURED = 'unstructured'
TWO_FOUR = '2:4'  # Two zeros in every four consecutive input-channel weights.
PROP_CLUSTERS = 'tfx_edge_number_of_clusters'
PROP_UNIQUE_WEIGHTS = 'tfx_edge_unique_weights_per_layer'  # JSON {layer: count}
PROP_2BY4_VERIFIED = 'tfx_edge_2by4_verified_tensors'  # JSON list, set by PTQConverter
PROP_CLUSTER_PRESERVE_SPARSITY = 'tfx_edge_cluster_preserve_sparsity'
PROP_UNCLUSTERED_LAYERS = 'tfx_edge_unclustered_layers'  # JSON {layer: why it has too few weights}
# Keras accuracy on the eval split after fine-tuning.
PROP_FINETUNE_VAL_ACCURACY = 'tfx_edge_finetune_val_accuracy'
# JSON: epochs run, the epoch whose weights were kept, and the BatchNorm re-estimation's eval
# scores before and after (components.common.finetune.training.record).
PROP_FINE_TUNING = 'tfx_edge_fine_tuning'
PROP_QAT_SCHEME = 'tfx_edge_qat_scheme'
PROP_FLOAT_LAYERS = 'tfx_edge_float_layers'  # JSON list of layers QAT left in float
PROP_FOLDED_BATCHNORM = 'tfx_edge_folded_batchnorm'  # JSON list of [conv, batchnorm] QAT folded
# PTQConverter(mode='int8_auto'): its options (JSON of ptq_converter.auto.AutoConfig), and
# what it chose (JSON: layers in float with their errors, accuracy, size and latency against int8;
# the layers are also in PROP_FLOAT_LAYERS).
INT8_AUTO_KEY = 'int8_auto'
# PTQConverter, for a clustered model: JSON {TFLite weight tensor: distinct int8 values}.
PROP_INT8_UNIQUE_WEIGHTS = 'tfx_edge_int8_unique_weights'
PROP_INT8_AUTO = 'tfx_edge_int8_auto'
MODEL_RUN_KEY = 'model_run'  # TensorBoard logs of fine-tuning, as the Trainer's model_run.

# A variant whose optimizer or conversion failed, recorded instead of stopping the run (see
# components/common/failures.py): 1 on the output of the step that failed and on every artifact
# made from it, with the reason in words. RECORD_FAILURE_KEY (1 or 0) turns recording on.
RECORD_FAILURE_KEY = 'record_failure'
PROP_FAILED = 'tfx_edge_failed'
PROP_FAILURE_REASON = 'tfx_edge_failure_reason'

# OTAPusher.
OTA_REPOSITORY_KEY = 'repository'
OTA_KEYS_DIR_KEY = 'keys_dir'  # A path (a mounted Secret); the keys themselves never pass here.
OTA_CHANNEL_KEY = 'channel'
OTA_DELTA_LAST_K_KEY = 'delta_last_k'
OTA_DELTA_MAX_RATIO_KEY = 'delta_max_ratio'
OTA_MIN_RUNTIME_KEY = 'min_runtime_version'

# DeviceBenchmarker.
BENCHMARK_KEY = 'benchmark'
TARGET_KEY = 'target'
BENCHMARK_SETTINGS_KEY = 'settings'  # JSON of MeasureSettings.
BUDGETS_KEY = 'budgets'  # JSON of Budgets.
VARIANT_KEY = 'variant'
BENCHMARK_JSON_FILE_NAME = 'benchmark.json'
REPORT_HTML_FILE_NAME = 'index.html'
# The RegressionGate's copy of the selection report, with the released model's row.
SELECTION_REPORT_DIR = 'selection'
# 1 when every measured model fits the device budgets. Not `blessed`, which is the TFMA verdict.
PROP_WITHIN_BUDGETS = 'tfx_edge_within_budgets'
PROP_BUDGET_REASON = 'tfx_edge_budget_reason'
PROP_P50_MS = 'tfx_edge_p50_ms'
PROP_P90_MS = 'tfx_edge_p90_ms'
PROP_PEAK_MEMORY_MB = 'tfx_edge_peak_memory_mb'
# A JSON summary of the chosen model's benchmark, carried onto the selected model (and from there
# into the OTA target's custom info).
PROP_BENCHMARK = 'tfx_edge_benchmark'

# VariantSelector.
SELECTION_KEY = 'selection'
PREFER_KEY = 'prefer'
VARIANTS_KEY = 'variants'  # JSON list of variant names, in pipeline order.
SELECTED_MODEL_KEY = 'model'
SELECTED_BLESSING_KEY = 'blessing'
SELECTION_JSON_FILE_NAME = 'selection.json'
PROP_SELECTED_VARIANT = 'tfx_edge_selected_variant'
PROP_SELECTION_REASON = 'tfx_edge_selection_reason'

# The gate's eval examples and schema (GateExamplesGen): what the Evaluator reads.
SCHEMA_KEY = 'schema'  # Same name as the TFX Evaluator's input.
EVAL_SPLIT_KEY = 'eval_split'
FILL_MISSING_KEY = 'fill_missing'  # JSON {feature: value}
PROP_EVAL_EXAMPLES = 'tfx_edge_eval_examples'
PROP_MISSING_VALUES = 'tfx_edge_missing_values'  # JSON {feature: examples that lack it}
PROP_FILLED_FEATURES = 'tfx_edge_filled_features'  # JSON {feature: the value filled in}
SCHEMA_FILE_NAME = 'schema.pbtxt'
GATE_EXAMPLES_KEY = 'gate_examples'

# RegressionGate: the candidate against the model released on the channel.
RELEASED_MODEL_KEY = 'released_model'
BLESSING_KEY = 'blessing'  # Same name as the TFX Evaluator's output.
EVAL_CONFIG_KEY = 'eval_config'  # Same name as the TFX Evaluator's parameter.
MODULE_PATH_KEY = 'module_path'  # Same name as the TFX Evaluator's parameter.
OTA_TRUSTED_ROOT_KEY = 'trusted_root'
# GateExamplesGen: the gate's task (components/common/tasks.py), checked against the model's output.
TASK_KEY = 'task'
MAX_REGRESSION_KEY = 'max_regression'
MAX_SLICE_REGRESSION_KEY = 'max_slice_regression'
# RegressionGate: standard errors of sampling noise a slice drop beyond its threshold may be.
SLICE_NOISE_Z_KEY = 'slice_noise_z'
# first_release, passed, regressed, signature_mismatch or not_evaluated (regression_gate.executor)
PROP_REGRESSION_STATUS = 'tfx_edge_regression_status'
PROP_REASON = 'tfx_edge_reason'  # Why a blessing blesses or not, in words.
PROP_RELEASED_VERSION = 'tfx_edge_released_version'  # 'none' before the first release.

# Staged rollout and approval (OTAPusher), and the regression blessing both pushers may require.
OTA_ROLLOUT_PERCENT_KEY = 'rollout_percent'
OTA_REQUIRE_APPROVAL_KEY = 'require_approval'  # 1 or 0
REGRESSION_BLESSING_KEY = 'regression_blessing'
PROP_RELEASE_STATE = 'tfx_edge_release_state'  # 'live' or 'pending' (awaiting approval)
PROP_ROLLOUT_PERCENT = 'tfx_edge_rollout_percent'
# OTAPusher: how long the metadata a push signs stays valid: JSON {role: duration such as "7d"}.
OTA_METADATA_EXPIRY_KEY = 'metadata_expiry'
# OTAPusher: how many versions per name and channel the targets metadata lists; 0 lists all.
OTA_KEEP_VERSIONS_KEY = 'keep_versions'
# OTAPusher: the split of its `examples` whose first example is the golden input, and where the
# golden input of a push came from (JSON: {"source": "examples", ...} or "deterministic").
OTA_GOLDEN_SPLIT_KEY = 'golden_split'
PROP_GOLDEN_INPUT = 'tfx_edge_golden_input'
# A release decision made after the push (`tfx-edge ota approve/reject --mlmd-...`), on the
# PushedModel artifact: who, when (ISO UTC), and the note.
PROP_DECIDED_BY = 'tfx_edge_decided_by'
PROP_DECIDED_AT = 'tfx_edge_decided_at'
PROP_DECISION_NOTE = 'tfx_edge_decision_note'
