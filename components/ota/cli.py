"""`tfx-edge`: the command line over the same code the pipeline uses.

    tfx-edge ota init        --repo REPO --keys DIR
    tfx-edge ota publish     --repo REPO --keys DIR --model FILE --name NAME [--channel C]
    tfx-edge ota rollback    --repo REPO --keys DIR --name NAME --to-version V [--channel C]
    tfx-edge ota rotate-keys --repo REPO --keys DIR --role {snapshot,timestamp}
    tfx-edge ota status      --repo REPO
    tfx-edge ota fetch       --url URL --trusted-root FILE --name NAME --dest DIR [--channel C]

REPO is a directory or an fsspec URI (gs://bucket/ota, s3://bucket/ota, file:///srv/ota);
DIR, the signing keys, is always a local directory.
"""
import argparse
import dataclasses
import json
import sys
from typing import List, Optional

from components.ota import client
from components.ota import repository


def _tensor_specs(model: bytes) -> dict:
  from components.ptq_converter import conversion  # pylint: disable=g-import-not-at-top
  details = conversion.io_details(model)
  return {k: [dataclasses.asdict(t) for t in v] for k, v in details.items()}


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='tfx-edge', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  ota = parser.add_subparsers(dest='group', required=True).add_parser(
      'ota', help='over-the-air model repository').add_subparsers(dest='command', required=True)
  init = ota.add_parser('init', help='create the repository and its signing keys')
  publish = ota.add_parser('publish', help='publish a TFLite model as a new version')
  rollback = ota.add_parser('rollback', help='re-publish an earlier version as a new version')
  rotate = ota.add_parser('rotate-keys', help='replace the key of an online role (new root)')
  status = ota.add_parser('status', help='list what is published')
  fetch = ota.add_parser('fetch', help='device side: verify, download and install the latest')
  for sub in (init, publish, rollback, rotate, status):
    sub.add_argument('--repo', required=True, help='repository directory or fsspec URI')
  for sub in (init, publish, rollback, rotate):
    sub.add_argument('--keys', required=True, help='directory of <role>.pem signing keys')
  for sub in (publish, rollback, fetch):
    sub.add_argument('--name', required=True, help='model name')
  publish.add_argument('--model', required=True, help='the .tflite file')
  publish.add_argument('--channel', default='stable')
  publish.add_argument('--delta-last-k', type=int, default=repository.DeltaPolicy.last_k,
                       help='publish bsdiff4 patches from the last K versions (0: none)')
  publish.add_argument('--delta-max-ratio', type=float, default=repository.DeltaPolicy.max_ratio,
                       help='only patches smaller than this fraction of the full file')
  rollback.add_argument('--to-version', type=int, required=True)
  rollback.add_argument('--channel', default=None, help='default: the old version\'s channel')
  rotate.add_argument('--role', required=True, choices=repository.ONLINE_ROLES)
  fetch.add_argument('--url', required=True, help='repository base URL')
  fetch.add_argument('--trusted-root', required=True, help='root.json obtained out of band')
  fetch.add_argument('--dest', required=True, help='the device\'s model directory')
  fetch.add_argument('--channel', default='stable')
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  args = _parser().parse_args(argv)
  try:
    if args.command == 'fetch':
      result = client.fetch(args.url, args.trusted_root, args.name, args.dest, args.channel)
      how = f' ({result.downloaded_bytes} bytes, {"patch" if result.via_patch else "full"})'
      print(f'{"installed" if result.updated else "up to date:"} {result.name} version '
            f'{result.version} at {result.path}' + (how if result.updated else ''))
      return 0
    policy = repository.DeltaPolicy(getattr(args, 'delta_last_k', 3),
                                    getattr(args, 'delta_max_ratio', 0.5))
    repo = repository.OTARepository(args.repo, getattr(args, 'keys', None), policy)
    if args.command == 'init':
      repo.init()
      print(f'created OTA repository {args.repo} (trusted root: {args.repo}/metadata/1.root.json)')
    elif args.command == 'publish':
      with open(args.model, 'rb') as f:
        model = f.read()
      release = repo.publish(args.name, model, args.channel, {'tensors': _tensor_specs(model)})
      print(f'published {release.name} version {release.version} on {release.channel}: '
            f'{release.path}')
    elif args.command == 'rotate-keys':
      root_version = repo.rotate_keys(args.role)
      print(f'rotated the {args.role} key: root version {root_version} names the new key; the '
            f'old key file is kept as {args.role}.pem.old-{root_version}')
    elif args.command == 'rollback':
      release = repo.rollback(args.name, args.to_version, args.channel)
      print(f'rolled {release.name} back to the bytes of version {args.to_version} as version '
            f'{release.version} on {release.channel}')
    else:
      for r in repo.releases():
        print(json.dumps({'name': r.name, 'version': r.version, 'channel': r.channel,
                          'path': r.path, 'sha256': r.sha256, 'bytes': r.length}))
  except (OSError, ValueError, LookupError, repository.PublishConflictError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except Exception as e:  # TUF's verification errors: show which check failed, nothing else.
    print(f'error: {type(e).__name__}: {e}', file=sys.stderr)
    return 3
  return 0


if __name__ == '__main__':
  sys.exit(main())
