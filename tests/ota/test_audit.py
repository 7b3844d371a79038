"""An approval made after the push reaches the pushed artifact in a real ML Metadata store."""
import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components import spec_keys
from components.errors import ConfigError
from components.ota import audit
from tests.ota.support import GATED


def _store_with_pushes(path, releases):
  """A SQLite ML Metadata store holding a PushedModel artifact per (path, version), as written
  by OTAPusher (pushed_destination, pushed_version as a string, release state)."""
  config = audit.connection_config(sqlite_path=_touch(path))
  store = metadata_store.MetadataStore(config)
  type_id = store.put_artifact_type(metadata_store_pb2.ArtifactType(name='PushedModel'))
  artifacts = []
  for target_path, version in releases:
    artifact = metadata_store_pb2.Artifact(type_id=type_id, uri=f'/pushed/{version}')
    props = artifact.custom_properties
    props[spec_keys.PROP_PUSHED_DESTINATION].string_value = target_path
    props[spec_keys.PROP_PUSHED_VERSION].string_value = str(version)
    props[spec_keys.PROP_RELEASE_STATE].string_value = 'pending'
    artifacts.append(artifact)
  store.put_artifacts(artifacts)
  return config, store


def _touch(path):
  path.write_bytes(b'')
  return str(path)


def test_an_approval_is_written_onto_the_pushed_artifact_of_that_release_only(repo, tmp_path):
  release = repo.publish('digits', b'model-v1', info={'mode': 'int8'},
                         require_approval=True, gated_by=GATED)
  approved = repo.approve('digits', release.version, by='alice', note='TFMA 0.97, p50 0.8 ms')
  config, store = _store_with_pushes(tmp_path / 'metadata.sqlite',
                                     [(release.path, release.version), (release.path, 99)])

  updated = audit.record_decision(config, approved.path, approved.version, approved.state,
                                  approved.approval)

  assert updated == 1
  by_uri = {a.uri: a.custom_properties for a in store.get_artifacts()}
  props = by_uri[f'/pushed/{release.version}']
  assert props[spec_keys.PROP_RELEASE_STATE].string_value == 'live'
  assert props[spec_keys.PROP_DECIDED_BY].string_value == 'alice'
  assert props[spec_keys.PROP_DECISION_NOTE].string_value == 'TFMA 0.97, p50 0.8 ms'
  assert props[spec_keys.PROP_DECIDED_AT].string_value == approved.approval['at']
  assert by_uri['/pushed/99'][spec_keys.PROP_RELEASE_STATE].string_value == 'pending'


@pytest.mark.parametrize('kwargs,message', [
    ({}, 'give exactly one ML Metadata store'),
    (dict(sqlite_path='/nonexistent/metadata.sqlite', grpc_address='h:1'),
     'give exactly one ML Metadata store'),
    (dict(sqlite_path='/nonexistent/metadata.sqlite'), 'no such file'),
    (dict(grpc_address='metadata-grpc'), "--mlmd-grpc 'metadata-grpc' is not accepted"),
])
def test_a_bad_store_is_refused_before_anything_is_read(kwargs, message):
  with pytest.raises(ConfigError, match=message):
    audit.connection_config(**kwargs)


def test_the_cli_records_approve_and_reject_in_ml_metadata(repo, cli_run, tmp_path):
  first = repo.publish('digits', b'model-v1', info={'mode': 'int8'},
                       require_approval=True, gated_by=GATED)
  second = repo.publish('digits', b'model-v2', info={'mode': 'int8'},
                        require_approval=True, gated_by=GATED)
  sqlite = tmp_path / 'metadata.sqlite'
  _, store = _store_with_pushes(sqlite, [(first.path, first.version),
                                         (second.path, second.version)])

  code, out, _ = cli_run('approve', '--name', 'digits', '--version', str(first.version),
                         '--by', 'alice', '--note', 'gate 0.97', '--mlmd-sqlite', str(sqlite))
  assert code == 0 and 'recorded in ML Metadata on 1 pushed artifact(s)' in out
  code, out, _ = cli_run('reject', '--name', 'digits', '--version', str(second.version),
                         '--by', 'bob', '--note', 'latency', '--mlmd-sqlite', str(sqlite))
  assert code == 0 and 'recorded in ML Metadata on 1 pushed artifact(s)' in out

  by_uri = {a.uri: a.custom_properties for a in store.get_artifacts()}
  approved, rejected = by_uri[f'/pushed/{first.version}'], by_uri[f'/pushed/{second.version}']
  assert approved[spec_keys.PROP_RELEASE_STATE].string_value == 'live'
  assert approved[spec_keys.PROP_DECIDED_BY].string_value == 'alice'
  assert rejected[spec_keys.PROP_RELEASE_STATE].string_value == 'rejected'
  assert rejected[spec_keys.PROP_DECIDED_BY].string_value == 'bob'
  assert rejected[spec_keys.PROP_DECISION_NOTE].string_value == 'latency'


def test_the_cli_checks_the_store_before_it_signs_a_decision(repo, cli_run, tmp_path):
  release = repo.publish('digits', b'model-v1', info={'mode': 'int8'},
                         require_approval=True, gated_by=GATED)
  metadata = tmp_path / 'repo' / 'metadata'
  before = {p.name: p.read_bytes() for p in metadata.iterdir()}

  code, _, err = cli_run('approve', '--name', 'digits', '--version', str(release.version),
                         '--by', 'alice', '--mlmd-grpc', 'metadata-grpc')

  assert code == 2 and "--mlmd-grpc 'metadata-grpc' is not accepted" in err
  assert [r.state for r in repo.releases('digits')] == ['pending']
  assert {p.name: p.read_bytes() for p in metadata.iterdir()} == before
