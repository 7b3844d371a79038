"""Release decisions made after the push, copied onto the pushed artifact in ML Metadata.

OTAPusher records a release as `pending` when it needs a human approval; the approval comes later,
from `tfx-edge ota approve`, and is signed into the target's metadata (the authoritative record).
This module writes the same decision (state, who, when, note) onto the PushedModel artifact of
that release, so that lineage queries in ML Metadata answer "who shipped version 7, and on which
evidence" without reading the repository. ML Metadata is imported only here, and only when asked.
"""
import os
from typing import Any, Mapping, Optional

from components import spec_keys
from components.errors import ConfigError


def connection_config(sqlite_path: Optional[str] = None, grpc_address: Optional[str] = None):
  """An ML Metadata connection: a local SQLite file (LocalDagRunner) or a gRPC service (KFP).

  Args:
    sqlite_path: an existing metadata.sqlite.
    grpc_address: HOST:PORT of the metadata gRPC service.

  Raises:
    ConfigError: neither or both given, a missing file, or a malformed address.
  """
  from ml_metadata.proto import metadata_store_pb2  # pylint: disable=g-import-not-at-top
  if (sqlite_path is None) == (grpc_address is None):
    raise ConfigError('give exactly one ML Metadata store: --mlmd-sqlite PATH or --mlmd-grpc '
                      'HOST:PORT.')
  if sqlite_path is not None:
    if not os.path.isfile(sqlite_path):
      raise ConfigError(f'--mlmd-sqlite {sqlite_path}: no such file; give the pipeline\'s '
                        'metadata.sqlite.')
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = sqlite_path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE
    return config
  host, _, port = grpc_address.rpartition(':')
  if not host or not port.isdigit():
    raise ConfigError(f'--mlmd-grpc {grpc_address!r} is not accepted: give HOST:PORT, for '
                      'example metadata-grpc-service.kubeflow:8080.')
  return metadata_store_pb2.MetadataStoreClientConfig(host=host, port=int(port))


def record_decision(config: Any, path: str, version: int, state: str,
                    decision: Mapping[str, str]) -> int:
  """Writes a release's state and decision onto its PushedModel artifacts; returns how many.

  Args:
    config: from connection_config.
    path: the release's target path (what OTAPusher recorded as pushed_destination).
    version: its version.
    state: its state now (live, rejected, ...).
    decision: {'by', 'at', 'note'} of the approval or rejection.
  """
  from ml_metadata import metadata_store  # pylint: disable=g-import-not-at-top
  store = metadata_store.MetadataStore(config)
  matching = []
  for artifact in store.get_artifacts_by_type('PushedModel'):
    props = artifact.custom_properties
    if (props[spec_keys.PROP_PUSHED_DESTINATION].string_value == path and
        props[spec_keys.PROP_PUSHED_VERSION].string_value == str(version)):
      props[spec_keys.PROP_RELEASE_STATE].string_value = state
      props[spec_keys.PROP_DECIDED_BY].string_value = decision.get('by') or ''
      props[spec_keys.PROP_DECIDED_AT].string_value = decision.get('at') or ''
      props[spec_keys.PROP_DECISION_NOTE].string_value = decision.get('note') or ''
      matching.append(artifact)
  if matching:
    store.put_artifacts(matching)
  return len(matching)
