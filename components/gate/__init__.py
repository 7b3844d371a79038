"""The TFMA accuracy gate: the EvalConfig the standard TFX Evaluator gates a TFLite model with.

Reading the Evaluator's output (metric values, failed thresholds, blessings) is in
components.common.evaluation, since the benchmarker, the selector and the pushers read it too.
"""
from components.gate.eval_config import DEFAULT_MAX_ACCURACY_DROP
from components.gate.eval_config import DEFAULT_MAX_ERROR_INCREASE
from components.gate.eval_config import DEFAULT_MIN_ACCURACY
from components.gate.eval_config import accuracy_gate_config
from components.gate.eval_config import gate_config
from components.gate.eval_config import validate_eval_config

__all__ = ['DEFAULT_MAX_ACCURACY_DROP', 'DEFAULT_MAX_ERROR_INCREASE', 'DEFAULT_MIN_ACCURACY',
           'accuracy_gate_config', 'gate_config', 'validate_eval_config']
