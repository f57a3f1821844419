"""Traffic routers: the protocol and the built-in ``file://`` router."""

from runbook.routers.base import Router

__all__ = ["Router"]
