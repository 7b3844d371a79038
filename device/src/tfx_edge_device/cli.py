"""`tfx-edge-device`: fetch and roll back on the device.

    tfx-edge-device fetch    --url URL --trusted-root FILE --name NAME --dest DIR [--channel C]
                             [--device-id ID] [--health-check {auto,require,off}]
                             [--status-file FILE]
    tfx-edge-device rollback --dest DIR --name NAME [--reason TEXT] [--status-file FILE]

Exit status: 0 done (installed, up to date or rolled back), 2 bad usage, a bad device id file or
nothing published for this device, 3 verification failed (tampered, expired or replayed
metadata, a bad hash, the repository unreachable), 4 the new model failed its health check (the
previous model stays). Every run writes the status file (default DIR/NAME.status.json).
"""
import argparse
import sys
from typing import List, Optional

from tuf.api import exceptions as tuf_exceptions

from tfx_edge_device import client
from tfx_edge_device import health
from tfx_edge_device import releases
from tfx_edge_device.errors import DeviceError
from tfx_edge_device.errors import HealthCheckError

EXIT_OK, EXIT_USAGE, EXIT_VERIFICATION, EXIT_HEALTH = 0, 2, 3, 4


def add_fetch_arguments(parser: argparse.ArgumentParser) -> None:
  """The options of `fetch`, shared with tfx-edge's `tfx-edge ota fetch`."""
  parser.add_argument('--url', required=True, help='base URL the repository is served at')
  parser.add_argument('--trusted-root', required=True,
                      help='a root.json obtained out of band (used on the first fetch only)')
  parser.add_argument('--name', required=True, help='model name (letters, digits, "_-.")')
  parser.add_argument('--dest', required=True, help='the device\'s model directory')
  parser.add_argument('--channel', default=releases.DEFAULT_CHANNEL,
                      help='release channel to follow')
  parser.add_argument('--device-id', default=None,
                      help='this device\'s id, which decides the rollouts that include it '
                      '(default: generated once and kept in DIR/device_id)')
  add_health_arguments(parser)


def add_health_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--health-check', default=health.AUTO, choices=health.MODES,
                      help='check a new model with LiteRT before switching to it: auto (when '
                      'ai-edge-litert is installed), require (refuse a model that cannot be '
                      'checked), off')
  add_status_argument(parser)


def add_status_argument(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--status-file', default=None, metavar='FILE',
                      help='where to write the JSON status of this run (default: '
                      'DIR/NAME.status.json)')


def describe(result: client.FetchResult) -> str:
  """One line for a person: what was installed, and how."""
  if result.outcome == client.UP_TO_DATE:
    return f'up to date: {result.name} version {result.version} at {result.path}'
  if result.outcome == client.ROLLED_BACK:
    return (f'rolled back: {result.name} version {result.version} at {result.path} (the kept '
            'previous model, no download)')
  checked = (result.health or {}).get('reason', 'not run')
  return (f'installed {result.name} version {result.version} at {result.path} '
          f'({result.downloaded_bytes} bytes, {"patch" if result.via_patch else "full"}; '
          f'health check: {checked})')


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='tfx-edge-device', description=__doc__.split('\n\n')[1],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  commands = parser.add_subparsers(dest='command', metavar='COMMAND', required=True)
  fetch = commands.add_parser('fetch', help='verify, download, health-check and install the '
                              'release for this device')
  add_fetch_arguments(fetch)
  rollback = commands.add_parser('rollback', help='go back to the kept previous model (no '
                                 'download); the next fetch does not reinstall the current one')
  rollback.add_argument('--dest', required=True, help='the device\'s model directory')
  rollback.add_argument('--name', required=True, help='model name')
  rollback.add_argument('--reason', default='', help='why, recorded in the status file')
  add_status_argument(rollback)
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  args = _parser().parse_args(argv)
  try:
    if args.command == 'fetch':
      result = client.fetch(args.url, args.trusted_root, args.name, args.dest, args.channel,
                            args.device_id, args.health_check, args.status_file)
    else:
      result = client.rollback(args.dest, args.name, args.reason, args.status_file)
  except HealthCheckError as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_HEALTH
  except (DeviceError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return EXIT_USAGE
  except (tuf_exceptions.RepositoryError, tuf_exceptions.DownloadError) as e:
    print(f'error: {type(e).__name__}: {e}', file=sys.stderr)
    return EXIT_VERIFICATION
  print(describe(result))
  return EXIT_OK


if __name__ == '__main__':
  sys.exit(main())
