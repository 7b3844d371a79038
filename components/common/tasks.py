"""What a model predicts (its task), read from its output, and which metrics can measure it.

A gate that cannot measure a model must refuse it: SparseCategoricalAccuracy on one sigmoid unit
takes the argmax of a single value, always class 0, and reports the share of negative labels for
every model alike. This module names the tasks, infers a task from an output layer (units and
activation), and says why a metric does not fit an output. Plain Python: no TensorFlow.
"""
import dataclasses
from typing import Optional

from components.errors import ConfigError

MULTICLASS = 'multiclass'  # N >= 2 output units (softmax or logits); labels are class indices.
BINARY = 'binary'  # One sigmoid unit: the probability of class 1; labels are 0/1.
BINARY_LOGITS = 'binary_logits'  # One linear unit: the logit of class 1; labels are 0/1.
REGRESSION = 'regression'  # Linear output; labels are real values.
# N >= 2 sigmoid units, each an independent yes/no; labels are N values 0/1 (multi-hot).
MULTILABEL = 'multilabel'
MULTILABEL_LOGITS = 'multilabel_logits'  # N >= 2 linear units, each a logit; multi-hot labels.
TASKS = (MULTICLASS, BINARY, BINARY_LOGITS, MULTILABEL, MULTILABEL_LOGITS, REGRESSION)

# The metric each task's gate thresholds: (TFMA class name, the name TFMA reports it under).
GATE_METRIC = {
    MULTICLASS: ('SparseCategoricalAccuracy', 'sparse_categorical_accuracy'),
    BINARY: ('BinaryAccuracy', 'binary_accuracy'),
    # BinaryAccuracy with the decision at logit 0 (probability 0.5), under a name of its own.
    BINARY_LOGITS: ('BinaryAccuracy', 'binary_accuracy_of_logits'),
    # BinaryAccuracy over every label of every example (micro-averaged), under names of their
    # own so that a blessing says which task it measured.
    MULTILABEL: ('BinaryAccuracy', 'multilabel_accuracy'),
    MULTILABEL_LOGITS: ('BinaryAccuracy', 'multilabel_accuracy_of_logits'),
    REGRESSION: ('MeanAbsoluteError', 'mean_absolute_error'),
}
# What each gate metric's TFMA class is constructed with besides its name.
GATE_METRIC_CONFIG = {BINARY_LOGITS: {'threshold': 0.0}, MULTILABEL: {},
                      MULTILABEL_LOGITS: {'threshold': 0.0}}
# Tasks whose output units are logits, which fine-tuning must read with from_logits=True; their
# outputs cannot be told from other tasks' (a regression's, a multi-class model's logits).
LOGIT_TASKS = frozenset({BINARY_LOGITS, MULTILABEL_LOGITS})
# Tasks whose label holds one value per output unit rather than one value per example.
MULTI_HOT_TASKS = frozenset({MULTILABEL, MULTILABEL_LOGITS})
# The task each gate metric measures, by the name TFMA reports it under.
TASK_OF_METRIC = {name: task for task, (_, name) in GATE_METRIC.items()}
# Gate metrics whose value goes down when the model gets better.
LOWER_IS_BETTER = frozenset({GATE_METRIC[REGRESSION][1]})

_PROBABILITIES = ('sigmoid', 'softmax')


@dataclasses.dataclass(frozen=True)
class Output:
  """A model's (single) output: its number of units and the activation that produces it."""
  units: Optional[int]
  activation: str  # 'linear' when the last layer applies none.

  def describe(self) -> str:
    return f'{self.units} unit(s), {self.activation} activation'


def validate_task(task: str) -> str:
  """Returns task if it is one of TASKS; raises ConfigError naming the accepted ones."""
  if task not in TASKS:
    raise ConfigError(f'task={task!r} is not accepted; accepted: {", ".join(TASKS)}.')
  return task


def infer(output: Output) -> str:
  """The task an output implies; raises ConfigError when none fits.

  One linear unit is taken for a regression (a binary classifier's logit cannot be told from
  it: say task='binary_logits'), and 2+ linear units for multi-class logits (say
  task='multilabel_logits' for independent labels); a binary classifier usually ends in a
  sigmoid unit, a multi-label one in a sigmoid unit per label.
  """
  if (output.units or 0) >= 2 and output.activation in ('softmax', 'linear'):
    return MULTICLASS
  if output.units == 1 and output.activation == 'sigmoid':
    return BINARY
  if (output.units or 0) >= 2 and output.activation == 'sigmoid':
    return MULTILABEL
  if output.activation not in _PROBABILITIES:
    return REGRESSION
  raise ConfigError(f'no gate task fits the model output ({output.describe()}); accepted '
                    f'outputs: 2+ units, softmax or logits ({MULTICLASS}), one sigmoid unit '
                    f'({BINARY}), 2+ sigmoid units ({MULTILABEL}), a linear output '
                    f'({REGRESSION}).')


def misfit(task: str, output: Output) -> str:
  """Why a gate for `task` cannot measure `output`, or '' when it can."""
  what = f'the model output has {output.describe()}'
  if task == MULTICLASS and (output.units or 0) < 2:
    return (f'{GATE_METRIC[MULTICLASS][0]} takes the argmax over the output units, but {what}: '
            'the argmax of one unit is always class 0, so the metric would be the share of '
            f'class-0 labels for every model. Use task={BINARY!r} (one sigmoid unit) or '
            f'{REGRESSION!r} (a linear output).')
  if task == BINARY and (output.units != 1 or output.activation != 'sigmoid'):
    logits = (f' or task={BINARY_LOGITS!r} for one linear unit (a logit)'
              if output.units == 1 and output.activation == 'linear' else '')
    return (f'task={BINARY!r} thresholds one probability at 0.5, but {what}. Use '
            f'task={MULTICLASS!r} for 2+ units{logits}, or end a binary classifier with one '
            'sigmoid unit.')
  if task == BINARY_LOGITS and (output.units != 1 or output.activation in _PROBABILITIES):
    return (f'task={BINARY_LOGITS!r} thresholds one logit at 0, but {what}. Use '
            f'task={BINARY!r} for one sigmoid unit, {MULTICLASS!r} for 2+ units.')
  if task == MULTILABEL and ((output.units or 0) < 2 or output.activation != 'sigmoid'):
    return (f'task={MULTILABEL!r} thresholds each of 2+ sigmoid units at 0.5, but {what}. Use '
            f'task={BINARY!r} for one sigmoid unit, {MULTILABEL_LOGITS!r} for linear units '
            f'(logits), {MULTICLASS!r} for a softmax.')
  if task == MULTILABEL_LOGITS and ((output.units or 0) < 2 or
                                    output.activation in _PROBABILITIES):
    return (f'task={MULTILABEL_LOGITS!r} thresholds each of 2+ logits at 0, but {what}. Use '
            f'task={MULTILABEL!r} for sigmoid units, {BINARY_LOGITS!r} for one logit, '
            f'{MULTICLASS!r} for a softmax.')
  if task == REGRESSION and output.activation in _PROBABILITIES:
    return (f'task={REGRESSION!r} compares the output with real-valued labels, but {what}, '
            f'which are probabilities. Use task={BINARY!r} or {MULTICLASS!r}.')
  return ''
