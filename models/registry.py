"""Models from the Vertex AI Model Registry: resolve a version or alias to its bundle, register a bundle.

A team's models live in the registry with versions and aliases (`champion`).
`--model projects/P/locations/L/models/M@VERSION` (or `@ALIAS`, or no `@` for
the default version) is resolved once, on the launcher, to the version's
artifact URI (the bundle folder, gs://) and version id; the workers load the
bundle from there, and every prediction row and the run summary name the
resolved `projects/P/locations/L/models/M@VERSION_ID`.

The calls go through google-cloud-aiplatform's `ModelServiceClient` over REST.
`api_endpoint` points it elsewhere than `LOCATION-aiplatform.googleapis.com`;
an `http://` endpoint (a local stand-in) gets anonymous credentials, since
no token should travel in clear text.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional, Sequence

# The registry requires a serving container of every model version; batch jobs never start it.
DEFAULT_SERVING_IMAGE = 'us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest'
_MODEL = re.compile(r'^projects/(?P<project>[^/@]+)/locations/(?P<location>[^/@]+)/models/(?P<model>[^/@]+)'
                    r'(?:@(?P<version>[A-Za-z0-9][A-Za-z0-9_\-]*))?$')


class RegistryError(ValueError):
  """A registry model could not be resolved or registered; says which and why."""


def is_registry_model(uri: Optional[str]) -> bool:
  return bool(uri) and _MODEL.match(uri) is not None


def _parts(name: str) -> re.Match:
  match = _MODEL.match(name)
  if not match:
    raise RegistryError(f'{name!r} is not a registry model: projects/PROJECT/locations/LOCATION/models/MODEL'
                        '[@VERSION_OR_ALIAS]')
  return match


@dataclasses.dataclass(frozen=True)
class RegistryModel:
  """One resolved model version."""
  resource_name: str  # projects/P/locations/L/models/M
  version_id: str
  artifact_uri: str
  display_name: str
  aliases: tuple[str, ...] = ()

  @property
  def versioned_name(self) -> str:
    return f'{self.resource_name}@{self.version_id}'

  def to_dict(self) -> dict[str, object]:
    return {'resource': self.versioned_name, 'version_id': self.version_id, 'artifact_uri': self.artifact_uri,
            'display_name': self.display_name, 'aliases': list(self.aliases)}


def model_service(location: str, api_endpoint: Optional[str] = None):
  """A ModelServiceClient (REST) for the location, or for `api_endpoint`."""
  from google.auth.credentials import AnonymousCredentials
  from google.cloud import aiplatform_v1
  endpoint = api_endpoint or f'{location}-aiplatform.googleapis.com'
  credentials = AnonymousCredentials() if endpoint.startswith('http://') else None
  return aiplatform_v1.ModelServiceClient(credentials=credentials, transport='rest',
                                          client_options={'api_endpoint': endpoint})


def _resolved(model) -> RegistryModel:
  resource = model.name.split('@', 1)[0]
  return RegistryModel(resource, str(model.version_id), model.artifact_uri, model.display_name,
                       tuple(model.version_aliases))


def resolve(name: str, *, api_endpoint: Optional[str] = None) -> RegistryModel:
  """The version `name` means now (an alias moves), with its artifact URI.

  Raises:
    RegistryError: no such model or version, no artifact URI, or the call failed.
  """
  from google.api_core import exceptions
  parts = _parts(name)
  try:
    model = model_service(parts['location'], api_endpoint).get_model(name=name)
  except exceptions.NotFound:
    raise RegistryError(f'--model {name}: no such model or version in the Vertex AI Model Registry') from None
  except exceptions.GoogleAPICallError as e:
    raise RegistryError(f'--model {name}: the Model Registry refused the lookup: {e.message}') from None
  resolved = _resolved(model)
  if not resolved.artifact_uri:
    raise RegistryError(f'--model {name}: version {resolved.version_id} has no artifact URI; register the bundle '
                        'folder as the artifact (./launch.sh import --register ...)')
  return resolved


def register_version(parent_model: str, artifact_uri: str, *, display_name: str, serving_image: str,
                     aliases: Sequence[str] = (), api_endpoint: Optional[str] = None,
                     timeout: float = 600) -> RegistryModel:
  """Uploads `artifact_uri` (a checked bundle folder) as a new version of `parent_model`.

  A parent that does not exist yet is created with this as version 1.
  """
  from google.api_core import exceptions
  from google.cloud import aiplatform_v1
  parts = _parts(parent_model)
  if parts['version']:
    raise RegistryError(f'--register {parent_model}: name the model, without @VERSION; the registry numbers versions')
  client = model_service(parts['location'], api_endpoint)
  model = aiplatform_v1.Model(display_name=display_name, artifact_uri=artifact_uri,
                              version_aliases=list(aliases),
                              container_spec=aiplatform_v1.ModelContainerSpec(image_uri=serving_image))
  parent = f'projects/{parts["project"]}/locations/{parts["location"]}'
  try:
    client.get_model(name=parent_model)
    request = {'parent': parent, 'model': model, 'parent_model': parent_model}
  except exceptions.NotFound:
    request = {'parent': parent, 'model': model, 'model_id': parts['model']}
  try:
    response = client.upload_model(request=request).result(timeout=timeout)
  except exceptions.GoogleAPICallError as e:
    raise RegistryError(f'registering {artifact_uri} as a version of {parent_model} failed: {e.message}') from None
  return resolve(f'{response.model}@{response.model_version_id}', api_endpoint=api_endpoint)


def load_bundle(model: str, *, api_endpoint: Optional[str] = None):
  """The bundle `--model` names: a folder, or a registry version's artifact folder (noted in its metadata)."""
  from models.bundle import ModelBundle
  if not is_registry_model(model):
    return ModelBundle.load(model)
  resolved = resolve(model, api_endpoint=api_endpoint)
  bundle = ModelBundle.load(resolved.artifact_uri)
  return dataclasses.replace(bundle, metadata={**bundle.metadata, 'registry': resolved.to_dict()})
