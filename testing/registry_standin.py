"""A local stand-in for the few Vertex AI Model Registry REST calls we make (not an emulator of Google).

It serves `GET /v1/projects/P/locations/L/models/M[@VERSION_OR_ALIAS]` and
`POST /v1/projects/P/locations/L/models:upload`, keeping versions in memory,
so `models.registry` runs its real client (google-cloud-aiplatform over REST)
against it through the client's api_endpoint option, with anonymous credentials.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import re
import threading
import urllib.parse
from typing import Iterator

_GET = re.compile(r'^/v1/(projects/[^/]+/locations/[^/]+/models/[^/@]+)(?:@([^/]+))?$')
_UPLOAD = re.compile(r'^/v1/(projects/[^/]+/locations/[^/]+)/models:upload$')


class ModelRegistryStandIn:
  """Model versions in memory: {resource name: [version dicts]}, version ids counted from 1."""

  def __init__(self):
    self.models: dict[str, list[dict]] = {}
    self.requests: list[tuple[str, str, dict]] = []

  def add_version(self, resource: str, artifact_uri: str, *, display_name: str = 'model',
                  aliases: tuple[str, ...] = ()) -> str:
    versions = self.models.setdefault(resource, [])
    version_id = str(len(versions) + 1)
    for alias in aliases:  # an alias names one version: moving it takes it off the others
      for v in versions:
        v['versionAliases'] = [a for a in v['versionAliases'] if a != alias]
    if not versions:
      aliases = ('default',) + tuple(aliases)
    versions.append({'name': resource, 'versionId': version_id, 'artifactUri': artifact_uri,
                     'displayName': display_name, 'versionAliases': list(aliases)})
    return version_id

  def find(self, resource: str, version: str | None) -> dict | None:
    for v in self.models.get(resource, []):
      if version is None and 'default' in v['versionAliases'] or version in (v['versionId'], *v['versionAliases']):
        return v
    return None


def _handler(registry: ModelRegistryStandIn):
  class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
      pass

    def _reply(self, status: int, body: dict):
      data = json.dumps(body).encode()
      self.send_response(status)
      self.send_header('Content-Type', 'application/json')
      self.send_header('Content-Length', str(len(data)))
      self.end_headers()
      self.wfile.write(data)

    def do_GET(self):
      path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
      registry.requests.append(('GET', path, {}))
      match = _GET.match(path)
      found = match and registry.find(match[1], match[2])
      if not found:
        self._reply(404, {'error': {'code': 404, 'message': f'{path} not found', 'status': 'NOT_FOUND'}})
        return
      self._reply(200, found)

    def do_POST(self):
      path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
      body = json.loads(self.rfile.read(int(self.headers.get('Content-Length') or 0)) or b'{}')
      registry.requests.append(('POST', path, body))
      match = _UPLOAD.match(path)
      if not match:
        self._reply(404, {'error': {'code': 404, 'message': f'{path} not found', 'status': 'NOT_FOUND'}})
        return
      resource = body.get('parentModel') or f'{match[1]}/models/{body.get("modelId")}'
      model = body['model']
      version = registry.add_version(resource, model['artifactUri'], display_name=model.get('displayName', ''),
                                     aliases=tuple(model.get('versionAliases', ())))
      self._reply(200, {'name': f'{match[1]}/operations/upload-{version}', 'done': True, 'response': {
          '@type': 'type.googleapis.com/google.cloud.aiplatform.v1.UploadModelResponse',
          'model': resource, 'modelVersionId': version}})
  return Handler


@contextlib.contextmanager
def serve(registry: ModelRegistryStandIn) -> Iterator[str]:
  """Serves the stand-in on a free 127.0.0.1 port; yields its http:// endpoint; stops on exit."""
  server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), _handler(registry))
  thread = threading.Thread(target=server.serve_forever, daemon=True)
  thread.start()
  try:
    yield f'http://127.0.0.1:{server.server_address[1]}'
  finally:
    server.shutdown()
    server.server_close()
