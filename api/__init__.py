"""The Falcon REST API: `gunicorn -c python:pvc.api.gunicorn 'pvc.api:create_app()'`."""

from __future__ import annotations

from typing import Any


def create_app(*args: Any, **kwargs: Any) -> Any:
    from pvc.api.app import create_app as factory

    return factory(*args, **kwargs)
