"""The HTTP API: Luma's Generations API under /v1, plus presigned blob URLs for local storage."""

from daguerre.api.app import create_app

__all__ = ["create_app"]
