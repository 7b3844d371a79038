"""An approval made after the push reaches the pushed artifact in a real ML Metadata store."""
import pytest
from ml_metadata import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components import spec_keys
from components.errors import ConfigError
from components.ota import audit


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
  release = repo.publish('digits', b'model-v1', info={'mode': 'int8'}, require_approval=True)
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
