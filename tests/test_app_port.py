"""The app's port: without one asked for it takes the next free port and says where it is; an asked-for port that
is taken is one `error:` line saying which port and what to do, before any model loads."""

from __future__ import annotations

import socket

import pytest

from prefkit import app as app_package
from prefkit.app import settings as settings_module
from prefkit.app.settings import PortInUseError, choose_port, port_is_free
from prefkit.cli import main as prefkit
from helpers import free_port


@pytest.fixture
def taken_port():
    """A port another program listens on, for as long as the test runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


@pytest.fixture
def launched(monkeypatch):
    """Records the settings the command would launch the app with, instead of launching it."""
    calls = []
    monkeypatch.setattr(app_package, "launch", lambda settings, **kwargs: calls.append(settings))
    monkeypatch.delenv("GRADIO_SERVER_PORT", raising=False)
    monkeypatch.delenv("GRADIO_SERVER_NAME", raising=False)
    monkeypatch.delenv("SPACE_ID", raising=False)
    return calls


def test_a_taken_port_is_not_free(taken_port):
    assert not port_is_free("127.0.0.1", taken_port)


def test_without_a_port_the_app_takes_the_next_free_one_and_prints_its_url(taken_port, launched, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(settings_module, "DEFAULT_PORT", taken_port)

    assert prefkit(["app", "--data_dir", str(tmp_path / "votes")]) == 0

    [settings] = launched
    assert settings.port != taken_port and taken_port < settings.port < taken_port + settings_module.PORTS_TRIED
    out = capsys.readouterr().out
    assert f"http://127.0.0.1:{settings.port}/ (port {taken_port} is taken)" in out


def test_a_taken_port_that_was_asked_for_is_one_error_line_before_anything_loads(taken_port, launched, tmp_path, capsys):
    assert prefkit(["app", "--port", str(taken_port), "--data_dir", str(tmp_path / "votes")]) == 2

    assert launched == []
    err = capsys.readouterr().err
    assert err.startswith(f"error: port {taken_port} on 127.0.0.1 is already in use")
    assert "--port" in err and "Traceback" not in err and "Cannot find empty port" not in err
    assert len(err.strip().splitlines()) == 1


def test_a_taken_port_in_the_environment_is_the_same_error(taken_port, launched, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("GRADIO_SERVER_PORT", str(taken_port))

    assert prefkit(["app", "--data_dir", str(tmp_path / "votes")]) == 2
    assert f"port {taken_port} " in capsys.readouterr().err


def test_the_library_launch_refuses_a_taken_port_before_loading_models(taken_port, monkeypatch, tmp_path):
    monkeypatch.setattr(app_package.AppModels, "load_in_background", lambda settings: pytest.fail("models loaded"))
    settings = app_package.AppSettings(data_dir=str(tmp_path / "votes"), port=taken_port, host="127.0.0.1")

    with pytest.raises(PortInUseError, match=f"port {taken_port} "):
        app_package.launch(settings, prevent_thread_lock=True)


def test_a_free_port_that_was_asked_for_is_used():
    port = free_port()
    assert choose_port("127.0.0.1", port) == port
