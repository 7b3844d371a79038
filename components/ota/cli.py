"""`tfx-edge`: the command line over the same code the pipeline uses.

    tfx-edge ota init        --repo REPO --keys DIR
    tfx-edge ota publish     --repo REPO --keys DIR --model FILE --name NAME [--channel C]
                             [--rollout-percent P] [--by WHO]
    tfx-edge ota approve     --repo REPO --keys DIR --name NAME --version V --by WHO
                             [--note TEXT] [--mlmd-sqlite FILE | --mlmd-grpc HOST:PORT]
    tfx-edge ota reject      --repo REPO --keys DIR --name NAME --version V [--by WHO]
                             [--mlmd-sqlite FILE | --mlmd-grpc HOST:PORT]
    tfx-edge ota promote     --repo REPO --keys DIR --name NAME --version V
                             (--percent P | --to-channel C)
    tfx-edge ota halt        --repo REPO --keys DIR --name NAME --version V
    tfx-edge ota rollback    --repo REPO --keys DIR --name NAME --to-version V [--channel C]
    tfx-edge ota rotate-keys --repo REPO --keys DIR --role {snapshot,timestamp}
                             [--new-signer URI [--new-public-key PEM]]
    tfx-edge ota refresh     --repo REPO --keys DIR [--if-expiring-within DURATION]
                             [--online-only]
    tfx-edge ota renew-root  --repo REPO --keys DIR [--root-expiry DURATION]
    tfx-edge ota status      --repo REPO [--channels] [--if-expiring-within DURATION]
    tfx-edge ota config      --repo REPO [--ROLE-expiry DURATION ...]
    tfx-edge ota gc          --repo REPO [--keys DIR] [--dry-run] [--min-age DURATION]
    tfx-edge ota fetch       --url URL --trusted-root FILE --name NAME --dest DIR [--channel C]
                             [--device-id ID] [--health-check {auto,require,off}]
                             [--status-file FILE]

REPO is a directory or an fsspec URI (gs://bucket/ota, s3://bucket/ota, file:///srv/ota);
DIR, the signing keys, is always a local directory: <role>.pem files, and signers.json for the
roles whose key is in an HSM or a KMS; every command given --keys also takes --signer ROLE=URI
(repeatable) for a key elsewhere (file:, hsm:, gcpkms:, awskms:, azurekms:; docs/ota.md, "Where
the keys live"). Every command given --repo also takes
--root-expiry, --targets-expiry, --snapshot-expiry and --timestamp-expiry: how long what it signs
stays valid (DURATION: 7d, 12h, 30m, 1d12h...), and the base of the refresh windows; a role not
given takes the period in the repository's config.json, which `init` writes from its flags and
`config` rewrites (then 365d, 90d, 30d, 7d). The
commands that write releases (publish, approve, reject, promote, halt, rollback, gc) take
--keep-versions K: the targets metadata lists the newest K versions per name and channel, plus
those still in use (0: every version).

The CLI prints only what was asked for, and imports no TensorFlow: models are inspected with
LiteRT, and only `publish` loads it.
"""
import argparse
import datetime
import importlib.metadata
import json
import os
import sys
from typing import Any, Dict, List, Optional

from tfx_edge_device import cli as device_cli
from tfx_edge_device import health
from tuf.api import exceptions as tuf_exceptions

from components.errors import TfxEdgeError
from components.ota import audit
from components.ota import client
from components.ota import repository
from components.ota import signing_keys

COMMANDS = ('init', 'publish', 'approve', 'reject', 'promote', 'halt', 'rollback',
            'rotate-keys', 'refresh', 'renew-root', 'status', 'gc', 'config', 'fetch')
STATE_CHANGES = ('approve', 'reject', 'promote', 'halt')


def _version() -> str:
  try:
    return importlib.metadata.version('tfx-edge')
  except importlib.metadata.PackageNotFoundError:
    return 'unknown (not installed)'


class _Formatter(argparse.RawDescriptionHelpFormatter):
  """Keeps the description's layout and shows each optional argument's default."""

  def _get_help_string(self, action):
    if action.option_strings and action.default not in (None, argparse.SUPPRESS):
      return f'{action.help} (default: %(default)s)'
    return action.help


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog='tfx-edge', description=__doc__.split('\n\nThe CLI')[0],
                                   formatter_class=_Formatter)
  parser.add_argument('--version', action='version', version=f'tfx-edge {_version()}')
  groups = parser.add_subparsers(dest='group', metavar='GROUP', title='command groups')
  ota_parser = groups.add_parser(
      'ota', help='the over-the-air model repository (publish, roll back, fetch)',
      description='Publish TFLite models into a signed TUF repository, and fetch them as a '
      'device would.', formatter_class=_Formatter)
  ota = ota_parser.add_subparsers(dest='command', metavar='COMMAND', title='commands')

  def command(name, help_text):
    return ota.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:]
                          + '.', formatter_class=_Formatter)

  init = command('init', 'create the repository and its signing keys')
  publish = command('publish', 'publish a TFLite model as the next version of a name')
  approve = command('approve', 'make a pending release live (recording who approved it)')
  reject = command('reject', 'discard a pending release: no device ever installs it')
  promote = command('promote', 'raise a live release\'s rollout, or copy it to another channel')
  halt = command('halt', 'stop a rollout: devices that took the release go back to the previous '
                 'one')
  rollback = command('rollback', 're-publish the bytes of an earlier version as a new version')
  rotate = command('rotate-keys', 'replace the key of an online role (writes a new root)')
  refresh = command('refresh', 're-sign the metadata that expires within its refresh window '
                    '(publishes nothing new)')
  renew = command('renew-root', 'write the next root with a new expiry, signed with the root key')
  status = command('status', 'list the published releases, then each role\'s expiry, one JSON '
                   'object per line')
  fetch = command('fetch', 'device side: verify, download and install the release for this '
                  'device')
  gc = command('gc', 'delete the target files no metadata a device may still be given names')
  config = command('config', 'store the expiry periods every later command signs with in the '
                   'repository\'s config.json (given flags), then print them')
  changes = (approve, reject, promote, halt)
  with_repo = (init, publish, rollback, rotate, refresh, renew, status, gc, config, *changes)
  for sub in with_repo:
    sub.add_argument('--repo', required=True, help='repository directory or fsspec URI')
  for sub in (init, publish, rollback, rotate, refresh, renew, *changes):
    sub.add_argument('--keys', required=True, help='local directory of <role>.pem signing keys')
    sub.add_argument('--signer', action='append', default=None, metavar='ROLE=URI',
                     help='sign ROLE with the key at URI (file:, hsm:, gcpkms:, awskms:, '
                     'azurekms:) instead of what --keys configures; repeatable')
  for sub in with_repo:
    for role in repository.ROLES:
      sub.add_argument(f'--{role}-expiry', default=None, metavar='DURATION',
                       help=f'how long {role} metadata this command signs stays valid (7d, 12h, '
                       '30m, 1d12h...); refresh windows are half of it (default: the '
                       'repository\'s config.json, else '
                       f'{repository.format_duration(repository.EXPIRY[role])})')
  for sub in (refresh, status):
    sub.add_argument('--if-expiring-within', default=None, metavar='DURATION',
                     help='the refresh window of every role (default: half its expiry period, '
                     f'at most {repository.format_duration(repository.MAX_ROOT_WINDOW)} for root)')
  for sub in (publish, rollback, gc, *changes):
    sub.add_argument('--keep-versions', type=int, default=repository.DEFAULT_KEEP_VERSIONS,
                     metavar='K', help='the targets metadata a write signs lists the newest K '
                     'versions per name and channel, plus those a rollout, a pending approval '
                     'or a halt still needs (0: every version); older files stay until gc')
  gc.add_argument('--keys', default=None,
                  help='local directory of <role>.pem signing keys: with it, gc first trims '
                  'every model\'s metadata to --keep-versions (signing with the targets key)')
  gc.add_argument('--dry-run', action='store_true',
                  help='list what would be deleted, and delete nothing')
  gc.add_argument('--min-age', default=repository.format_duration(repository.DEFAULT_GC_MIN_AGE),
                  metavar='DURATION', help='grace period: keep files written, and files named '
                  'by metadata signed, within it (0s: none)')
  refresh.add_argument('--online-only', action='store_true',
                       help='re-sign only snapshot and timestamp (the online keys, all a '
                       'scheduled job holds); a targets file within its window is a warning')
  for sub in (publish, rollback, fetch, *changes):
    sub.add_argument('--name', required=True, help='model name (letters, digits, "_-.")')
  for sub in changes:
    sub.add_argument('--version', type=int, required=True, help='the release\'s version')
  approve.add_argument('--by', required=True,
                       help='who approves (a person or a team), recorded in the signed metadata')
  for sub in (reject, promote, halt):
    sub.add_argument('--by', default=None, help='who does this, recorded in the audit record')
  for sub in changes:
    sub.add_argument('--note', default=None, help='why (for example the evidence looked at), '
                     'recorded in the audit record')
  for sub in (approve, reject):
    store = sub.add_mutually_exclusive_group()
    store.add_argument('--mlmd-sqlite', default=None, metavar='FILE',
                       help='also record the decision on the pushed artifact in this ML Metadata '
                       'SQLite file (the local pipeline\'s metadata.sqlite)')
    store.add_argument('--mlmd-grpc', default=None, metavar='HOST:PORT',
                       help='also record the decision in this ML Metadata gRPC service (on '
                       'Kubeflow: metadata-grpc-service.kubeflow:8080)')
  percent_or_channel = promote.add_mutually_exclusive_group(required=True)
  percent_or_channel.add_argument('--percent', type=int, default=None,
                                  help='raise the rollout to this percentage of devices')
  percent_or_channel.add_argument('--to-channel', default=None,
                                  help='publish the same release, live at 100%%, on this channel')
  for sub in (promote, halt):
    sub.add_argument('--channel', default=None,
                     help='the channel of the release, when its version is on several '
                     '(halt: default all of them)')
  publish.add_argument('--model', required=True, help='the .tflite file to publish')
  publish.add_argument('--channel', default=repository.DEFAULT_CHANNEL,
                       help='release channel')
  publish.add_argument('--rollout-percent', type=int, default=repository.FULL_ROLLOUT,
                       help='percentage of the channel\'s devices that install it (1-100)')
  publish.add_argument('--require-approval', action='store_true',
                       help='refused: a pending release is created only by the pipeline '
                       '(OTAPusher), for a model its gates blessed')
  publish.add_argument('--by', default=None, help='who publishes, recorded in the audit record')
  status.add_argument('--channels', action='store_true',
                      help='one line per name and channel instead: the released version, its '
                      'rollout and approval, and the halted, pending and rejected versions')
  publish.add_argument('--delta-last-k', type=int, default=repository.DeltaPolicy.last_k,
                       help='publish bsdiff4 patches from the last K versions (0: none)')
  publish.add_argument('--delta-max-ratio', type=float, default=repository.DeltaPolicy.max_ratio,
                       help='publish a patch only when it is smaller than this fraction of the '
                       'full file')
  rollback.add_argument('--to-version', type=int, required=True,
                        help='the earlier version whose bytes become the new version')
  rollback.add_argument('--channel', default=None,
                        help='release channel (default: the earlier version\'s channel)')
  rotate.add_argument('--role', required=True, choices=repository.ONLINE_ROLES,
                      help='the role to re-key')
  rotate.add_argument('--new-signer', default=None, metavar='URI',
                      help='the new key, made beforehand in an HSM or a KMS (required when the '
                      'role\'s key is there; default: generate a new PEM file)')
  rotate.add_argument('--new-public-key', default=None, metavar='PEM',
                      help='the PEM file of the --new-signer key\'s public key (a KMS key; an '
                      'hsm: key\'s is read from the token)')
  fetch.add_argument('--url', required=True, help='base URL the repository is served at')
  fetch.add_argument('--trusted-root', required=True,
                     help='a root.json obtained out of band (used on the first fetch only)')
  fetch.add_argument('--dest', required=True, help='the device\'s model directory')
  fetch.add_argument('--channel', default=repository.DEFAULT_CHANNEL,
                     help='release channel to follow')
  fetch.add_argument('--device-id', default=None,
                     help='this device\'s id, which decides the rollouts that include it '
                     '(default: generated once and kept in DIR/device_id)')
  device_cli.add_health_arguments(fetch)
  return parser


def _parse(argv: Optional[List[str]]) -> argparse.Namespace:
  parser = _parser()
  args = parser.parse_args(argv)
  if args.group is None:
    parser.error('a command group is required: ota (see tfx-edge --help)')
  if args.command is None:
    parser.error(f'a command is required: tfx-edge ota {{{",".join(COMMANDS)}}} '
                 '(see tfx-edge ota --help)')
  if args.command == 'publish' and not os.path.isfile(args.model):
    parser.error(f'--model {args.model}: no such file')
  if args.command == 'fetch' and not os.path.isfile(args.trusted_root):
    parser.error(f'--trusted-root {args.trusted_root}: no such file')
  return args


def _run(args: argparse.Namespace) -> None:
  """Runs one parsed command; raises TfxEdgeError (and OSError) for what went wrong."""
  if args.command == 'fetch':
    result = client.fetch(args.url, args.trusted_root, args.name, args.dest, args.channel,
                          args.device_id, args.health_check, args.status_file)
    print(device_cli.describe(result))
    return
  policy = repository.DeltaPolicy()
  if args.command == 'publish':
    policy = repository.DeltaPolicy(args.delta_last_k, args.delta_max_ratio)
    repository.validate_channel(args.channel)
    repository.validate_rollout_percent(args.rollout_percent, '--rollout-percent')
  # Every value is checked before the repository is touched.
  expiry = {role: repository.parse_duration(getattr(args, f'{role}_expiry'), f'--{role}-expiry')
            for role in repository.ROLES if getattr(args, f'{role}_expiry') is not None}
  window = getattr(args, 'if_expiring_within', None)
  if window is not None:
    window = repository.parse_duration(window, '--if-expiring-within')
  signers = signing_keys.parse_signer_flags(getattr(args, 'signer', None))
  new_public_key = None
  if getattr(args, 'new_public_key', None):
    with open(args.new_public_key, encoding='utf-8') as f:
      new_public_key = f.read()
  keep = getattr(args, 'keep_versions', repository.DEFAULT_KEEP_VERSIONS)
  keep = repository.validate_keep_versions(keep or None, '--keep-versions')  # 0: every version
  repo = repository.OTARepository(args.repo, getattr(args, 'keys', None), policy, expiry,
                                  signers=signers, keep_versions=keep)
  if args.command in STATE_CHANGES:
    _change_state(repo, args)
    return
  if args.command == 'refresh':
    _refresh(repo, window, args.online_only)
  elif args.command == 'renew-root':
    version = repo.renew_root()
    root = repo.expiry_status()[0]
    print(f'renewed root: version {version} expires {root["expires"]} '
          f'({_relative(root["expires_in_s"])}); devices walk the root chain '
          'to it on their next fetch')
  elif args.command == 'config':
    periods = repo.save_expiry() if expiry else repo.expiry
    print(json.dumps({'expiry': {role: repository.format_duration(periods[role])
                                 for role in repository.ROLES}}))
  elif args.command == 'init':
    repo.init()
    print(f'created OTA repository {args.repo} (trusted root: {args.repo}/metadata/1.root.json)')
  elif args.command == 'publish':
    if args.require_approval:
      # A pending release is one an approver may make live: only a model the pipeline's gates
      # blessed may become one, and a file given here has met no gate.
      raise TfxEdgeError(
          '--require-approval is refused: a pending release exists only for a model the '
          'pipeline\'s gates blessed, and a --model file has met none. Run the pipeline with '
          '--require-approval (OTAPusher(require_approval=True) records the blessings), or '
          'publish this file live without --require-approval. Nothing was written.')
    from components.common import tflite  # pylint: disable=g-import-not-at-top
    with open(args.model, 'rb') as f:
      model = f.read()
    try:
      tensors = tflite.io_specs(model)
    except ValueError as e:  # LiteRT's own message for a file that is not a model.
      raise TfxEdgeError(f'--model {args.model} is not a TFLite model: {e}') from None
    # The golden record the device's health check runs (tfx_edge_device/health.py); a model
    # without inputs has nothing to run.
    golden = None
    if tensors['inputs']:
      try:
        golden = health.record_bytes(health.golden_record(model))
      except ValueError as e:  # LiteRT loads the model but cannot run it.
        raise TfxEdgeError(f'--model {args.model} does not run in LiteRT, so no golden record '
                           f'can be made for the device health check: {e}') from None
    release = repo.publish(args.name, model, args.channel, {'tensors': tensors},
                           rollout_percent=args.rollout_percent,
                           require_approval=args.require_approval, by=args.by, golden=golden)
    print(f'published {release.name} version {release.version} on {release.channel}: '
          f'{release.path}' + _how_shipped(release))
  elif args.command == 'rotate-keys':
    root_version = repo.rotate_keys(args.role, args.new_signer, new_public_key)
    kept = ('signers.json names it and keeps the old URI under "previous"' if args.new_signer
            else f'the old key file is kept as {args.role}.pem.old-{root_version}')
    print(f'rotated the {args.role} key: root version {root_version} names the new key; {kept}')
  elif args.command == 'gc':
    _gc(repo, args)
  elif args.command == 'rollback':
    release = repo.rollback(args.name, args.to_version, args.channel)
    print(f'rolled {release.name} back to the bytes of version {args.to_version} as version '
          f'{release.version} on {release.channel}')
  elif args.channels:
    for line in repo.channel_status():
      print(json.dumps(line))
  else:
    releases = repo.releases()
    released = {(s['name'], s['channel']): s['released_version'] for s in repo.channel_status()}
    for r in releases:
      evidence = {k: r.custom[k] for k in _EVIDENCE if k in r.custom}
      print(json.dumps({'name': r.name, 'version': r.version, 'channel': r.channel,
                        'path': r.path, 'sha256': r.sha256, 'bytes': r.length,
                        'state': r.state, 'rollout_percent': r.rollout_percent,
                        'released': released[(r.name, r.channel)] == r.version,
                        'approval': r.approval, 'audit': r.audit, 'evidence': evidence}))
    # Then one line per role (lines with `role`, not `name`), and its warning on stderr.
    roles = repo.expiry_status(window)
    for line in roles:
      print(json.dumps(line))
    _warn(roles)


def _gc(repo: repository.OTARepository, args: argparse.Namespace) -> None:
  result = repo.gc(dry_run=args.dry_run, min_age=args.min_age)
  for name in result['trimmed']:
    print(f'trimmed the metadata of {name} to the newest {repo.keep_versions} versions per '
          'channel (plus those in use)')
  verb = 'would delete' if args.dry_run else 'deleted'
  for path in result['deleted']:
    print(f'{verb} {path}')
  print(f'{verb} {len(result["deleted"])} target files; kept {result["referenced"]} that '
        f'metadata names and {len(result["young"])} unnamed ones younger than --min-age '
        f'{args.min_age}')


def _human_seconds(seconds: int) -> str:
  return repository.format_duration(datetime.timedelta(seconds=seconds), parts=2, sep=' ')


def _relative(seconds: int) -> str:
  """`in 6d 23h`, or `1d 2h ago`."""
  human = _human_seconds(seconds)
  return f'in {human}' if seconds > 0 else f'{human} ago'


def _expires_in(seconds: int) -> str:
  return ('expires ' if seconds > 0 else 'expired ') + _relative(seconds)


def _warn(roles) -> None:
  for line in roles:
    if line['warning']:
      print(f'warning: {line["warning"]}', file=sys.stderr)


def _refresh(repo: repository.OTARepository, window, online_only: bool) -> None:
  result = repo.refresh(window, online_only=online_only)
  roles = {line['role']: line for line in result['roles']}
  for role in result.get('resigned_delegated', []):
    print(f're-signed the delegated targets role {role}: version {roles[role]["version"]}')
  for role in result['resigned']:
    line = roles[role]
    print(f're-signed {role}: version {line["version"]}, expires {line["expires"]} '
          f'({_relative(line["expires_in_s"])})')
  if not result['resigned']:
    print('nothing to refresh: ' + ', '.join(
        f'{role} {_expires_in(roles[role]["expires_in_s"])} (window '
        f'{_human_seconds(roles[role]["refresh_window_s"])})'
        for role in reversed(repository.REFRESHED_ROLES)))
  _warn(result['roles'])


# Custom info that says why a release was shipped, shown by `status`.
_EVIDENCE = ('tfma_metrics', 'benchmark', 'regression_gate', 'gated_by', 'source_model_uri',
             'promoted_from', 'rolled_back_from')


def _how_shipped(release: repository.Release) -> str:
  if release.state == repository.PENDING:
    return (f' (pending: no device installs it until `tfx-edge ota approve --name '
            f'{release.name} --version {release.version} --by WHO`)')
  if release.state == repository.LIVE and release.rollout_percent < repository.FULL_ROLLOUT:
    return f' (rolling out to {release.rollout_percent}% of devices)'
  if release.state != repository.LIVE:
    return f' (already there, {release.state}: nothing was published)'
  return ''


def _change_state(repo: repository.OTARepository, args: argparse.Namespace) -> None:
  store = None
  if getattr(args, 'mlmd_sqlite', None) or getattr(args, 'mlmd_grpc', None):
    # Checked before the repository changes, so a bad address does not leave a decision that
    # is signed but missing from ML Metadata.
    store = audit.connection_config(args.mlmd_sqlite, args.mlmd_grpc)
  if args.command == 'approve':
    r = repo.approve(args.name, args.version, args.by, args.note or '')
    print(f'approved {r.name} version {r.version} on {r.channel}: live for '
          f'{r.rollout_percent}% of devices (approved by {r.approval["by"]} at '
          f'{r.approval["at"]})')
    _record(store, r, r.approval)
  elif args.command == 'reject':
    r = repo.reject(args.name, args.version, args.by, args.note or '')
    print(f'rejected {r.name} version {r.version} on {r.channel}: no device will install it')
    _record(store, r, r.audit[-1] if r.audit else {})
  elif args.command == 'promote':
    r = repo.promote(args.name, args.version, percent=args.percent, to_channel=args.to_channel,
                     channel=args.channel, by=args.by, note=args.note or '')
    where = f'promoted to {r.channel}' if args.to_channel else 'rolling out'
    print(f'{r.name} version {r.version} {where}: live for {r.rollout_percent}% of devices on '
          f'{r.channel}')
  else:
    for r in repo.halt(args.name, args.version, args.channel, args.by, args.note or ''):
      print(f'halted {r.name} version {r.version} on {r.channel}: devices that took it go back '
            'to the previous live release on their next fetch')


def _record(store: Any, release: repository.Release, decision: Dict[str, Any]) -> None:
  """Copies a signed decision onto the release's PushedModel artifacts in ML Metadata."""
  if store is None:
    return
  count = audit.record_decision(store, release.path, release.version, release.state, decision)
  if count:
    print(f'recorded in ML Metadata on {count} pushed artifact(s)')
  else:
    # Published outside a pipeline (tfx-edge ota publish) or into another store: the signed
    # metadata stays the authoritative record, so this is a warning, not a failure.
    print(f'warning: no PushedModel artifact in ML Metadata has destination {release.path} '
          f'and version {release.version}; the decision is only in the signed metadata',
          file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
  """The console script. Exit status: 0 done, 2 bad usage or refused, 3 verification failed,
  4 (fetch) the new model failed its health check on the device."""
  args = _parse(argv)
  try:
    _run(args)
  except client.HealthCheckError as e:
    print(f'error: {e}', file=sys.stderr)
    return device_cli.EXIT_HEALTH
  except (TfxEdgeError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  except (tuf_exceptions.RepositoryError, tuf_exceptions.DownloadError) as e:
    # A device-side check failed (tampered, expired or replayed metadata, a bad hash): say which.
    print(f'error: {type(e).__name__}: {e}', file=sys.stderr)
    return 3
  return 0


if __name__ == '__main__':
  sys.exit(main())
