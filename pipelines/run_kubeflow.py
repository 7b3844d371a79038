"""Compiles the pipeline for Kubeflow Pipelines (and optionally submits it).

    python -m pipelines.run_kubeflow --output pipeline.yaml [--image IMG] [--pipeline-root URI]
        [--data DIR [--data-format csv|tfrecord] --module-file FILE --label-key KEY
        [--task T] [--fill-missing NAME=VALUE,...]]
        [--ota-repository DIR] [--ota-keys DIR] [--variants ...]
        [--beam-arg=ARG ...]
        [--submit --host URL [--experiment NAME] [--run-name NAME]]

The same create_pipeline(...) as the local runners, compiled with KubeflowV2DagRunner into the
KFP v2 pipeline spec in YAML, the form the kfp client submits (the `.json` form TFX also writes
is Vertex AI's PipelineJob, which kfp rejects). User code is referenced by import path (it is
installed in the image), so compiling needs no upload and works offline.
"""
import argparse
import os
import sys
from typing import List, Optional

from tfx.orchestration.kubeflow.v2 import kubeflow_v2_dag_runner
import yaml

from components.errors import ConfigError
from components.errors import TfxEdgeError
from pipelines import pipeline as pipeline_lib

DEFAULT_IMAGE = 'tfx-edge:0.1.0'
# Where the k8s/ manifests mount the pipeline-root volume and the data baked into the image.
DEFAULT_PIPELINE_ROOT = '/mnt/pipeline-root/tfx-edge-digits'
DEFAULT_DATA_ROOT = '/opt/tfx-edge/data'
DEFAULT_OTA_REPOSITORY = '/mnt/pipeline-root/ota'
# Names from k8s/: the pipeline-root volume every step mounts, and the signing keys only the
# push step mounts.
PIPELINE_ROOT_PVC = 'tfx-edge-pipeline-root'
PIPELINE_ROOT_MOUNT = '/mnt/pipeline-root'
OTA_KEYS_SECRET = 'tfx-edge-ota-keys'
OTA_KEYS_MOUNT = '/var/run/secrets/tfx-edge/ota'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--output', required=True, help='the compiled spec, ending in .yaml.')
  parser.add_argument('--image', default=DEFAULT_IMAGE, help='container image of every step.')
  parser.add_argument('--pipeline-root', default=DEFAULT_PIPELINE_ROOT,
                      help='artifact root: a path on the mounted volume, or gs://, s3:// ...')
  parser.add_argument('--ota-repository', default=DEFAULT_OTA_REPOSITORY,
                      help='the TUF repository (on the pipeline-root volume).')
  parser.add_argument('--ota-keys', default=OTA_KEYS_MOUNT,
                      help='signing-key directory in the push step (the mounted Secret).')
  parser.add_argument('--pipeline-name', default='tfx-edge-digits',
                      help='KFP pipeline name: lowercase letters, digits and "-".')
  parser.add_argument('--variants', default=None,
                      help='comma-separated variants to build (default: ptq with --model-format '
                      f'saved_model, else all of {",".join(pipeline_lib.VARIANTS)}).')
  parser.add_argument('--beam-arg', action='append', default=[], dest='beam_args',
                      help='Beam pipeline argument for every Beam-powered step (repeatable).')
  # In the image: the digits ship at DEFAULT_DATA_ROOT, and --module-file must be a path there.
  pipeline_lib.add_data_arguments(parser, default_data=DEFAULT_DATA_ROOT)
  pipeline_lib.add_selection_arguments(parser)
  pipeline_lib.add_optimization_arguments(parser)
  pipeline_lib.add_release_arguments(parser)
  parser.add_argument('--submit', action='store_true', help='submit the run with kfp.Client.')
  parser.add_argument('--host', help='Kubeflow Pipelines API endpoint, for --submit.')
  parser.add_argument('--experiment', default='tfx-edge')
  parser.add_argument('--run-name', default=None)
  args = parser.parse_args(argv)
  if not args.output.endswith(('.yaml', '.yml')):
    parser.error(f'--output {args.output!r} must end in .yaml: the .json form is Vertex AI\'s '
                 'PipelineJob, which the kfp client rejects.')
  if args.submit and not args.host:
    parser.error('--submit needs --host, the Kubeflow Pipelines API endpoint '
                 '(for example http://localhost:8080 after kubectl port-forward).')
  return args


def compile_pipeline(args: argparse.Namespace) -> str:
  """Writes the KFP v2 YAML spec; returns its path."""
  pipeline = pipeline_lib.create_pipeline(
      pipeline_name=args.pipeline_name,
      pipeline_root=args.pipeline_root,
      data_root=args.data,
      **pipeline_lib.data_kwargs(args),
      ota_repository=args.ota_repository,
      ota_keys_dir=args.ota_keys,
      variants=pipeline_lib.variants_of(args.variants),
      beam_pipeline_args=args.beam_args,
      **pipeline_lib.selection_kwargs(args),
      **pipeline_lib.optimization_kwargs(args),
      **pipeline_lib.release_kwargs(args))
  output = os.path.abspath(args.output)
  runner = kubeflow_v2_dag_runner.KubeflowV2DagRunner(
      config=kubeflow_v2_dag_runner.KubeflowV2DagRunnerConfig(default_image=args.image),
      output_dir=os.path.dirname(output),
      output_filename=os.path.basename(output))
  runner.run(pipeline)
  add_kubernetes_config(output)
  return output


def add_kubernetes_config(package: str, pusher_node: str = pipeline_lib.PUSHER) -> None:
  """Appends the KFP Kubernetes platform spec (the document kfp-kubernetes writes) to the YAML.

  Every step mounts the pipeline-root volume, so artifacts written by one pod are there for the
  next; only the push step mounts the OTA signing-key Secret (Secret volumes are read-only).
  KubeflowV2DagRunner has no option for this, hence the second YAML document.
  """
  with open(package) as f:
    spec = yaml.safe_load(f)
  executors = {}
  for label in spec['deploymentSpec']['executors']:
    config = {'pvcMount': [{'constant': PIPELINE_ROOT_PVC, 'mountPath': PIPELINE_ROOT_MOUNT}]}
    if label == f'{pusher_node}_executor':
      config['secretAsVolume'] = [{'secretName': OTA_KEYS_SECRET, 'mountPath': OTA_KEYS_MOUNT}]
    executors[label] = config
  with open(package, 'a') as f:
    f.write('---\n')
    yaml.safe_dump({'platforms': {'kubernetes': {'deploymentSpec': {'executors': executors}}}},
                   f, sort_keys=True)


def submit(package: str, args: argparse.Namespace) -> str:
  """Submits the compiled spec; returns the run id. Raises TfxEdgeError when unreachable."""
  import kfp  # pylint: disable=g-import-not-at-top
  try:
    client = kfp.Client(host=args.host)
    run = client.create_run_from_pipeline_package(
        package, arguments={}, run_name=args.run_name, experiment_name=args.experiment,
        pipeline_root=args.pipeline_root)
  except Exception as e:  # kfp raises urllib3, HTTP and API errors alike for an absent server.
    raise TfxEdgeError(
        f'could not submit to Kubeflow Pipelines at {args.host}: {type(e).__name__}: {e}. Is a '
        'KFP API server reachable there (for example `kubectl port-forward -n kubeflow '
        'svc/ml-pipeline-ui 8080:80`)? The compiled spec is at ' + package) from e
  return run.run_id


def main(argv: Optional[List[str]] = None) -> int:
  args = parse_args(argv)
  package = compile_pipeline(args)
  print(f'Compiled {args.pipeline_name!r} for Kubeflow Pipelines: {package}')
  if args.submit:
    try:
      run_id = submit(package, args)
    except TfxEdgeError as e:
      print(f'error: {e}', file=sys.stderr)
      return 2
    print(f'Submitted run {run_id} to {args.host}')
  return 0


if __name__ == '__main__':
  try:
    sys.exit(main())
  except ConfigError as e:  # A bad flag value: say which, as argparse does, without a traceback.
    print(f'run_kubeflow: error: {e}', file=sys.stderr)
    sys.exit(2)
