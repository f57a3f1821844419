"""The ``http`` resource's client: an ``httpx.Client`` that can also build URLs safely.

A module of its own so that httpx is imported when a run first asks for ``http``, not by every
command that registers the built-in resources (``runbook list``, ``runbook runs``...).
"""

from __future__ import annotations

import httpx

from runbook import commands


class Http(httpx.Client):
    """The ``http`` resource: an ``httpx.Client`` that can also build URLs safely.

    ``http.get(http.url("http://web/api/{svc}/health", svc=svc))`` percent-encodes each value as
    one path segment or query value (``runbook.commands.url``).
    """

    url = staticmethod(commands.url)
