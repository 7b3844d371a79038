"""The TFMA accuracy gate: an EvalConfig for the standard TFX Evaluator, and its results."""
from components.gate.eval_config import accuracy_gate_config
from components.gate.eval_config import validate_eval_config
from components.gate.results import metric_values
from components.gate.results import validation_failures

__all__ = ['accuracy_gate_config', 'metric_values', 'validate_eval_config', 'validation_failures']
