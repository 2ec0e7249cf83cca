"""The HTTP layer both apps share: a route table that is also the OpenAPI source, error rendering, metrics."""

from brain.web.router import Request, Route, Router

__all__ = ["Request", "Route", "Router"]
