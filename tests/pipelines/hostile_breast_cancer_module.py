"""breast_cancer_module with an input_fn that scales inputs 50x: only calibration reads it.

The Trainer's run_fn is breast_cancer_module's and reads the data correctly; PTQConverter
calibrates through this module's input_fn, so the int8 ranges are 50x too wide.
"""
from tests.pipelines.breast_cancer_module import FEATURE_SPEC  # noqa: F401
from tests.pipelines.breast_cancer_module import hostile_input_fn as input_fn  # noqa: F401
from tests.pipelines.breast_cancer_module import run_fn  # noqa: F401
