"""Prefect API clients for a flow run, built on one TLS context per process.

Left to itself, Prefect builds three HTTP clients for every flow run (an async one for the engine
and a sync one each time it resolves the flow's result storage, twice a run), and each client
loads the whole CA bundle into a new TLS context: about 20 ms apiece on this machine, some 60 ms a
flow run, for an API that is often plain HTTP on loopback. Here a run's clients are built once,
on a TLS context built once, and Prefect finds them in its client contexts.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import Any, cast

# API URLs whose server has answered that it has no CSRF protection
_without_csrf: set[str] = set()


@lru_cache(maxsize=4)
def _tls_context(skip_verify: bool, cert_file: str | None) -> ssl.SSLContext:
    """The context Prefect's clients would each build for themselves (same settings, same rules)."""
    if skip_verify:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    import certifi

    return ssl.create_default_context(cafile=cert_file or certifi.where())


def client_settings() -> dict[str, Any]:
    """httpx settings for a Prefect client: the process's TLS context for the current settings."""
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_TLS_INSECURE_SKIP_VERIFY

    skip_verify = bool(PREFECT_API_TLS_INSECURE_SKIP_VERIFY.value())
    return {"verify": _tls_context(skip_verify, PREFECT_API_SSL_CERT_FILE.value() or None)}


@asynccontextmanager
async def run_clients() -> AsyncIterator[None]:
    """Open one async and one sync Prefect client that every Prefect call inside finds and uses."""
    from prefect.client.base import PrefectHttpxAsyncClient
    from prefect.client.orchestration import get_client
    from prefect.context import AsyncClientContext, SyncClientContext

    settings = client_settings()
    client = get_client(httpx_settings=settings)
    http = cast(PrefectHttpxAsyncClient, client._client)  # what PrefectClient builds it as
    api = str(client.api_url)
    if api in _without_csrf:  # learned by an earlier client: skip asking again each run
        http.enable_csrf_support = False
    # model_construct, not the constructors: those record their httpx settings, and Prefect's
    # get_client() (no settings) would then not recognise the contexts' clients as its own and
    # build new ones. These clients differ from Prefect's own only in sharing a TLS context.
    async_context = AsyncClientContext.model_construct(client=client)
    sync_context = SyncClientContext.model_construct(
        client=get_client(sync_client=True, httpx_settings=settings)
    )
    try:
        async with async_context:
            with sync_context:
                yield
    finally:
        # A client asks the server for a CSRF token before its first write; a server without
        # CSRF protection (Prefect's default) answers 422 and the client stops asking. Each
        # run's client would ask again: a round trip a run.
        if not http.enable_csrf_support:
            _without_csrf.add(api)
