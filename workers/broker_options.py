"""The Celery settings that select and configure Chorus's transport (workers/transport.py) for
CHORUS_REDIS_URL: which transport class, TLS for rediss://, the Sentinel master's name, and the
WAIT after each publish and receipt. Kept apart so the transport module is the classes alone.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any
from urllib.parse import urlparse

from kombu.utils.url import parse_url

from workers import redis_urls
from workers.settings import Settings

log = logging.getLogger(__name__)

TRANSPORT = "workers.transport:Transport"
SENTINEL_TRANSPORT = "workers.transport:SentinelTransport"
WAIT_OPTIONS = ("chorus_wait_replicas", "chorus_wait_timeout_ms")
"""Transport options (and channel attributes) of the WAIT after each publish and receipt."""


def celery_options(url: str) -> dict[str, Any]:
    """The Celery settings that select this transport for a broker URL.

    kombu picks its transport from the URL's scheme only when none is given; with an explicit
    one the scheme is no longer seen, so what kombu does for `rediss://` (TLS, and
    certificates unchecked unless the URL's `ssl_*` query says otherwise, with a warning) is
    done here: an `ssl_*` query in the URL still replaces `broker_use_ssl` whole.
    """
    first = url.split(";", 1)[0]
    scheme = urlparse(first).scheme
    options: dict[str, Any] = {
        "broker_transport": SENTINEL_TRANSPORT if scheme == "sentinel" else TRANSPORT
    }
    if scheme == "rediss":
        # The same options the connection ends up with, so Flower's Redis client gets them too.
        options["broker_use_ssl"] = parse_url(first).get("ssl") or {"ssl_cert_reqs": ssl.CERT_NONE}
        if "ssl_cert_reqs=" not in url:
            log.warning(
                "rediss:// broker URL without ssl_cert_reqs: the server's certificate is not "
                "checked; add ?ssl_cert_reqs=required (and ssl_ca_certs=) to the URL"
            )
    return options


def sentinel_options(settings: Settings) -> dict[str, Any]:
    """Transport options of a sentinel:// URL, for the broker and the result backend alike
    (kombu's SentinelChannel and Celery's SentinelBackend read the same two); none otherwise."""
    if not redis_urls.is_sentinel(settings.redis_url):
        return {}
    redis_urls.parse_sentinel(settings.redis_url)  # a malformed list fails here, with its fix
    return {
        "master_name": settings.sentinel_master,
        "sentinel_kwargs": redis_urls.sentinel_options(settings.sentinel_password),
    }


def wait_options(settings: Settings) -> dict[str, Any]:
    """Broker transport options of the WAIT after each publish (CHORUS_REDIS_WAIT_REPLICAS)."""
    if settings.redis_wait_replicas <= 0:
        return {}
    return dict(
        zip(
            WAIT_OPTIONS,
            (settings.redis_wait_replicas, settings.redis_wait_timeout_ms),
            strict=True,
        )
    )
