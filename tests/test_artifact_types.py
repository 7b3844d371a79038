"""The artifact types tfx-edge adds (components/artifact_types.py)."""
import pytest

from components import DeviceBenchmarkResult
from components import VariantSelectionResult
from components import artifact_types


@pytest.mark.parametrize('artifact_type', [artifact_types.DeviceBenchmark,
                                           artifact_types.VariantSelection])
def test_custom_artifact_types_survive_the_kubeflow_v2_runtime(artifact_type):
  """KFP's compiler wants `<namespace>.<Title>`; its runtime imports that name as a class path."""
  from tfx.orchestration.kubeflow.v2 import compiler_utils  # pylint: disable=g-import-not-at-top
  from tfx.utils import import_utils  # pylint: disable=g-import-not-at-top
  schema = compiler_utils.get_artifact_schema(artifact_type)  # raises on a bad title
  assert f'title: {artifact_type.TYPE_NAME}' in schema
  assert import_utils.import_class_by_path(artifact_type.TYPE_NAME) is artifact_type


def test_the_package_exports_each_type_under_its_type_name():
  assert DeviceBenchmarkResult is artifact_types.DeviceBenchmark
  assert VariantSelectionResult is artifact_types.VariantSelection
