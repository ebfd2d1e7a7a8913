"""The proxy variables, read as curl reads them.

``https_proxy`` for https URLs and ``http_proxy`` for http ones (lower case before
upper case; an empty value is no proxy), and ``no_proxy`` (:func:`bypasses_proxy`).
Only http:// proxies: https is tunnelled through them with CONNECT, http is asked of
them in absolute form (:mod:`.connections`). Credentials in the proxy URL are sent
to the proxy only (``Proxy-Authorization: Basic``) and never shown.
"""

from __future__ import annotations

import base64
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ..errors import UpstreamError

#: The port of a proxy URL that names none (curl's default).
_PROXY_PORT = 1080


@dataclass(frozen=True, slots=True)
class Proxy:
    """An http:// proxy: where it listens and the credentials it is sent."""

    host: str
    port: int
    authorization: str | None

    def __str__(self) -> str:  # never the credentials
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def headers(self) -> dict[str, str]:
        return {"Proxy-Authorization": self.authorization} if self.authorization else {}


def bypasses_proxy(host: str, no_proxy: str) -> bool:
    """Whether ``no_proxy`` (the value of ``no_proxy`` or ``NO_PROXY``) sends requests
    for ``host`` direct, read as curl reads it.

    ``*`` alone matches every host. Otherwise entries are separated by commas or
    blanks; a host name matches an entry equal to it or to one of its parent domains
    (a leading and a trailing dot of the entry, and a trailing dot of the host, are
    ignored; case is not), so ``example.com`` matches ``www.example.com`` but not
    ``notexample.com``. An IP address matches an equal address or a network in CIDR
    form (``10.0.0.0/8``, ``fd00::/8``), never by suffix. ``localhost`` and loopback
    addresses are not special: they go through the proxy unless listed.
    """
    value = no_proxy.strip()
    if not value:
        return False
    if value == "*":
        return True
    name = host.strip("[]").lower()
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        address = None
        name = name.removesuffix(".")
    for entry in re.split(r"[\s,]+", value.lower()):
        if not entry:
            continue
        if address is not None:
            try:
                network = ipaddress.ip_network(entry.strip("[]"), strict=False)
            except ValueError:
                continue
            if network.version == address.version and address in network:
                return True
            continue
        domain = entry.removesuffix(".").removeprefix(".")
        if domain and (name == domain or name.endswith("." + domain)):
            return True
    return False


def _first_set(env: Mapping[str, str], name: str) -> tuple[str, str] | None:
    """``(variable, value)`` of ``name`` in lower case, else in upper case, if set."""
    for variable in (name, name.upper()):
        value = env.get(variable, "").strip()
        if value:
            return variable, value
    return None


def _redact(url: str) -> str:
    """A proxy URL without its password, fit for messages."""
    scheme, sep, rest = url.rpartition("://")
    userinfo, at, hostport = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.split(':', 1)[0]}:***@{hostport}"


class Proxies:
    """The proxy variables as they were when the client was made."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._by_scheme = {s: _first_set(env, f"{s}_proxy") for s in ("http", "https")}
        bypass = _first_set(env, "no_proxy")
        self._no_proxy = bypass[1] if bypass else ""
        self._parsed: dict[str, Proxy] = {}

    def for_url(self, url: str, scheme: str, host: str) -> Proxy | None:
        """The proxy to reach ``host`` through for ``scheme``, if any; an UpstreamError
        naming ``url`` when the variable holds a proxy this client cannot use."""
        setting = self._by_scheme[scheme]
        if setting is None or bypasses_proxy(host, self._no_proxy):
            return None
        variable, value = setting
        proxy = self._parsed.get(variable)
        if proxy is None:
            proxy = self._parsed[variable] = _parse_proxy(url, variable, value)
        return proxy


def _parse_proxy(url: str, variable: str, value: str) -> Proxy:
    """An ``http://[user:password@]host[:port]`` proxy URL (the scheme may be left out)."""
    parts = urlsplit(value if "://" in value else f"http://{value}")
    problem = ""
    try:
        port = parts.port or _PROXY_PORT
    except ValueError as exc:
        problem, port = str(exc), 0
    if parts.scheme != "http":
        problem = f"{parts.scheme}:// proxies are not supported, only http://"
    elif not parts.hostname:
        problem = "no host"
    if problem:
        raise UpstreamError(f"{url}: cannot use the proxy {variable}={_redact(value)}: {problem}")
    authorization = None
    if parts.username is not None:
        pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        authorization = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
    assert parts.hostname is not None
    return Proxy(parts.hostname, port, authorization)
