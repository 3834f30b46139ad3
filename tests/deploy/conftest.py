"""The deploy checks run with Google Cloud out of reach."""

import socket

import pytest


@pytest.fixture
def offline(monkeypatch):
  """Fails any connection to a host other than this machine, so 'offline' is checked, not assumed."""
  real_connect = socket.socket.connect

  def connect(sock, address):
    host = address[0] if isinstance(address, tuple) else address
    if isinstance(host, str) and not (host.startswith('127.') or host in ('::1', 'localhost') or host.startswith('/')):
      raise AssertionError(f'a network connection to {address} was attempted')
    return real_connect(sock, address)

  def getaddrinfo(host, *args, **kwargs):
    raise AssertionError(f'a name lookup of {host} was attempted')

  monkeypatch.setattr(socket.socket, 'connect', connect)
  monkeypatch.setattr(socket, 'getaddrinfo', getaddrinfo)
