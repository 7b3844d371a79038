"""A short console log for pipeline runs: one line per finished step, and the warnings that matter.

TFX, Beam, TFMA and TensorFlow log every proto and option at INFO; a demo run wrote about 18,000
lines. `quiet(total_steps)` routes all Python logging through one handler that prints

    [8/23] ptq_int8 done in 4.2 s

when the runner reports a component finished, plus every WARNING or worse that this project's
own code logs and every ERROR from anywhere. Everything else still goes to a log file:
`StderrToFile` sends the process's stderr there (the C++ runtimes write to it directly), and
`quiet(..., log_path=...)` writes every Python record there too. `--verbose` on the runners skips
all of this and restores the full log on the console.

Imports only the standard library, so a runner can use it before TensorFlow loads.
"""
import atexit
import logging
import os
import re
import sys
import time
from typing import Dict, Optional, TextIO

# What LocalDagRunner ("Component X is ...") and BeamDagRunner ("node X is ...") log around each
# step, and what the launcher logs when a step reuses a cached execution.
_STEP = re.compile(r'^(?:Component|node) (\S+) is (running|finished)\.$')
_CACHED = re.compile(r'^A cached execution \d+ is used\.$')
# What the project's executors log when a variant fails (components/common/failures.py): the
# step then finishes without a usable model, and its progress line must not say `done`.
_OUTCOMES = (('recorded as a failed variant', 'FAILED (recorded; the run goes on)'),
             ('is a failed variant', 'skipped (its variant failed earlier)'))
# Warnings from these directories are the project's own, written for users.
_OWN_CODE = tuple(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), d)
                  + os.sep for d in ('components', 'pipelines'))
# Libraries that attach their own handlers instead of propagating to the root logger.
_SELF_HANDLED = ('tensorflow',)


class ProgressHandler(logging.Handler):
  """Prints step progress lines and the warnings worth a user's attention.

  Attributes:
    seconds: how long each finished step took, by node id.
  """

  def __init__(self, total_steps: int, stream: Optional[TextIO] = None):
    super().__init__(level=logging.INFO)
    self._total = total_steps
    self._stream = stream
    self._started: Dict[str, float] = {}
    self._running: Optional[str] = None
    self._cached = False
    self._outcome: Optional[str] = None
    self.seconds: Dict[str, float] = {}

  def _print(self, line: str) -> None:
    stream = self._stream or sys.stdout
    stream.write(line + '\n')
    stream.flush()

  def emit(self, record: logging.LogRecord) -> None:
    try:
      message = record.getMessage()
    except Exception:  # pylint: disable=broad-except  # A bad format string is not our problem.
      return
    step = _STEP.match(message)
    if step:
      node, state = step.groups()
      if state == 'running':
        self._started[node], self._running, self._cached = time.monotonic(), node, False
        self._outcome = None
      else:
        self.seconds[node] = time.monotonic() - self._started.pop(node, time.monotonic())
        how = self._outcome or ('reused from cache' if self._cached else 'done')
        self._print(f'[{len(self.seconds)}/{self._total}] {node} {how} in '
                    f'{self.seconds[node]:.1f} s')
      return
    if _CACHED.match(message):
      self._cached = True
      return
    own = record.pathname.startswith(_OWN_CODE)
    if own and record.levelno == logging.WARNING:
      self._outcome = next((how for marker, how in _OUTCOMES if marker in message),
                           self._outcome)
    if record.levelno >= logging.ERROR or (record.levelno >= logging.WARNING and own):
      where = f' ({self._running})' if self._running else ''
      self._print(f'{record.levelname}{where}: {message}')


def quiet(total_steps: int, stream: Optional[TextIO] = None,
          log_path: Optional[str] = None) -> ProgressHandler:
  """Replaces the root logger's handlers with a ProgressHandler; returns it.

  Args:
    total_steps: the number of components, for the `[i/N]` counter.
    stream: where to print (default: sys.stdout at print time).
    log_path: a file that receives every record at INFO and above, with time and level.
  """
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  handler = ProgressHandler(total_steps, stream)
  root = logging.getLogger()
  for old in list(root.handlers):
    root.removeHandler(old)
  root.addHandler(handler)
  if log_path:
    full = logging.FileHandler(log_path)
    full.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))
    root.addHandler(full)
  root.setLevel(logging.INFO)
  # The runners report steps at INFO through absl, whose own level must let them through.
  absl_logging.set_verbosity(absl_logging.INFO)
  for name in _SELF_HANDLED:
    logger = logging.getLogger(name)
    logger.handlers.clear()
    logger.propagate = True
  # Python warnings (deprecations, FutureWarnings of libraries) become log records, which the
  # handler drops unless the project's own code raised them.
  logging.captureWarnings(True)
  return handler


def verbose() -> None:
  """The full log: everything at INFO on stderr, as TFX prints it by default."""
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
  absl_logging.set_verbosity(absl_logging.INFO)


class StderrToFile:
  """Sends this process's stderr (file descriptor 2) to a file until `restore()`.

  TensorFlow, XLA and the TFLite converter write their log lines straight to file descriptor 2
  from C++, past Python's logging; pointing the descriptor elsewhere is the only way to keep them
  off the console. Start it before TensorFlow is imported to catch its import-time lines, then
  `move_to` the run's own log file once its path is known.
  """

  def __init__(self, path: str):
    self.path = path
    self._moved = False
    sys.stderr.flush()
    self._console = os.dup(2)
    self._redirect(path, 'wb')
    # A process that dies before its log has a place (an import error, a bad argument) must not
    # die silently: its stderr is replayed on the console at exit.
    atexit.register(self._replay_unless_moved)

  def _replay_unless_moved(self) -> None:
    if self._moved or self._console is None:
      return
    self.restore()
    with open(self.path, 'rb') as f:
      sys.stderr.buffer.write(f.read())
    sys.stderr.flush()
    os.unlink(self.path)

  def _redirect(self, path: str, mode: str) -> None:
    with open(path, mode) as f:
      os.dup2(f.fileno(), 2)

  def move_to(self, path: str) -> None:
    """Continues in `path`, starting it with what was captured so far."""
    sys.stderr.flush()
    with open(self.path, 'rb') as src:
      early = src.read()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, 'wb') as dst:
      dst.write(early)
    self._redirect(path, 'ab')
    if os.path.abspath(path) != os.path.abspath(self.path):
      os.unlink(self.path)
    self.path = path
    self._moved = True

  def discard(self) -> None:
    """Points stderr back at the console and drops what was captured, unless it was moved."""
    self.restore()
    if not self._moved and os.path.exists(self.path):
      os.unlink(self.path)

  def restore(self) -> None:
    """Points stderr back at the console (idempotent)."""
    if self._console is None:
      return
    sys.stderr.flush()
    os.dup2(self._console, 2)
    os.close(self._console)
    self._console = None
