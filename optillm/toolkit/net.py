"""A safe HTTP(S) fetcher for plugins that read the web (``readurls``, ``web_search``).

``fetch(url, ...) -> Fetched`` GETs a URL a prompt named, with the limits a proxy needs when a
client decides where it connects:

- only ``http``/``https``; no environment proxies (a proxy would connect on our behalf, past
  the checks);
- the host is resolved and **every** resolved address is checked: loopback, private,
  link-local, multicast, reserved, unspecified, shared (CGNAT) and other non-global addresses
  are refused, and so are the cloud metadata addresses (169.254.169.254, fd00:ec2::254, ...),
  all before any connection is made;
- the connection goes to one of the checked addresses (pinned), never to a second lookup of
  the name, which defeats DNS rebinding; TLS still verifies the certificate for the name;
- redirects are followed by hand, at most ``max_redirects``, each target checked again;
- a wall-clock ``timeout`` (seconds) for the whole fetch and a ``max_bytes`` cap on the body
  (the body is cut there and ``truncated`` set).

``allow_private`` opens the private ranges: ``True`` allows every non-global address except
the metadata ones; an iterable of CIDR strings (``["127.0.0.1/32"]``) allows exactly those
networks (metadata included only when listed). It is a server decision, never a client's.

Errors: ``FetchRefused`` (policy: scheme, address, redirect limit) and ``FetchFailed``
(network, status >= 400, timeout); both subclass ``FetchError`` and carry the URL.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BYTES = 2_000_000
DEFAULT_MAX_REDIRECTS = 5
USER_AGENT = "optillm-readurls/1.0 (+https://github.com/codelion/optillm)"

#: Cloud instance-metadata endpoints (AWS, GCP, Azure, OpenStack; Alibaba; AWS over IPv6).
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "169.254.170.2", "100.100.100.200", "fd00:ec2::254"))

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]


class FetchError(Exception):
    """A URL could not be fetched; ``url`` is the one that failed."""

    def __init__(self, message: str, url: str):
        super().__init__(message)
        self.url = url


class FetchRefused(FetchError):
    """The fetch was refused by policy before any connection to the refused address."""


class FetchFailed(FetchError):
    """The network, the server or the time limit failed the fetch."""


@dataclass(frozen=True)
class Fetched:
    """A fetched page: the final ``url`` (after redirects), ``status``, ``content_type``
    (lower case, without parameters), the ``body`` bytes, ``charset`` (when the server named
    one) and ``truncated`` (the body was cut at ``max_bytes``)."""

    url: str
    status: int
    content_type: str
    body: bytes
    charset: str | None = None
    truncated: bool = False

    @property
    def text(self) -> str:
        return self.body.decode(self.charset or "utf-8", "replace")


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


def _allowed_networks(allow_private: bool | Iterable[str]) -> list | None:
    if isinstance(allow_private, bool):
        return None
    return [ipaddress.ip_network(n, strict=False) for n in allow_private]


def address_refusal(ip: IPAddress, allow_private: bool | Iterable[str] = False) -> str | None:
    """Why ``ip`` may not be fetched (e.g. ``"loopback"``), or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    networks = _allowed_networks(allow_private)
    if networks is not None and any(ip in net for net in networks):
        return None
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if allow_private is True:
        return None
    for reason in ("loopback", "private", "link_local", "multicast", "reserved",
                   "unspecified"):
        if getattr(ip, f"is_{reason}"):
            return reason.replace("_", "-")
    if not ip.is_global:
        return "not a global address"
    return None


def check_host(host: str, port: int, url: str, allow_private: bool | Iterable[str] = False,
               resolver: Resolver = _system_resolver) -> list[str]:
    """The addresses ``host`` resolves to, all checked.

    Raises: FetchRefused when any of them is refused; FetchFailed when it does not resolve.
    """
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
        addresses = [str(literal)]
    except ValueError:
        try:
            addresses = list(dict.fromkeys(resolver(host, port)))
        except (OSError, UnicodeError) as exc:
            raise FetchFailed(f"cannot resolve {host!r}: {exc}", url) from exc
    if not addresses:
        raise FetchFailed(f"{host!r} resolves to no address", url)
    for addr in addresses:
        reason = address_refusal(ipaddress.ip_address(addr.split("%")[0]), allow_private)
        if reason:
            raise FetchRefused(f"refused to fetch {url}: {host} resolves to {addr} "
                               f"({reason})", url)
    return addresses


def _pinned_pool(scheme: str, host: str, port: int, addresses: list[str], timeout: float):
    """A urllib3 pool for ``host`` whose connections go to the checked ``addresses`` only."""
    import urllib3
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.util import connection as u3conn

    def new_conn(self):
        last: Exception | None = None
        for addr in addresses:  # a second lookup of the name could give another answer
            try:
                return u3conn.create_connection((addr, self.port), self.timeout)
            except OSError as exc:
                last = exc
        raise urllib3.exceptions.NewConnectionError(self, f"cannot connect to {host}: {last}")

    base_conn = HTTPSConnection if scheme == "https" else HTTPConnection
    conn_cls = type("PinnedConnection", (base_conn,), {"_new_conn": new_conn})
    base_pool = (urllib3.HTTPSConnectionPool if scheme == "https"
                 else urllib3.HTTPConnectionPool)
    pool_cls = type("PinnedPool", (base_pool,), {"ConnectionCls": conn_cls})
    return pool_cls(host, port, timeout=urllib3.Timeout(connect=timeout, read=timeout),
                    retries=False, maxsize=1)


def fetch(url: str, *, allow_private: bool | Iterable[str] = False,
          timeout: float = DEFAULT_TIMEOUT, max_bytes: int = DEFAULT_MAX_BYTES,
          max_redirects: int = DEFAULT_MAX_REDIRECTS,
          resolver: Resolver = _system_resolver, method: str = "GET",
          headers: Mapping[str, str] | None = None, body: bytes | None = None) -> Fetched:
    """GET (or ``method``) ``url`` under the module's rules (see the module docstring).

    ``timeout`` is seconds for the whole fetch, redirects included; ``max_bytes`` caps the
    body; ``resolver(host, port) -> [address, ...]`` is the name lookup (tests replace it).
    ``headers`` are added to (and may replace) the default ones; ``body`` is sent with
    ``method``. Only a GET follows redirects: another method's redirect is refused, so a
    request body (an API key header, a query) is never replayed at a host it was not meant for.

    Raises: FetchRefused, FetchFailed.
    """
    import urllib3

    allow = allow_private if isinstance(allow_private, bool) else list(allow_private)
    deadline = time.monotonic() + timeout
    current = url
    for _hop in range(max_redirects + 1):
        parts = urlsplit(current)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchRefused(f"refused to fetch {current}: only http(s) URLs with a host",
                               current)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            raise FetchRefused(f"refused to fetch {current}: bad port", current) from exc
        addresses = check_host(parts.hostname, port, current, allow, resolver)
        left = deadline - time.monotonic()
        if left <= 0:
            raise FetchFailed(f"fetching {url} took longer than {timeout:g}s", current)
        pool = _pinned_pool(parts.scheme, parts.hostname, port, addresses, left)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        sent = {"User-Agent": USER_AGENT,
                "Accept": "text/html, text/plain;q=0.9, */*;q=0.5", **(headers or {})}
        try:
            resp = pool.urlopen(method, path, body=body, redirect=False,
                                preload_content=False, headers=sent)
        except urllib3.exceptions.HTTPError as exc:
            pool.close()
            raise FetchFailed(f"fetching {current} failed: {exc}", current) from exc
        try:
            if resp.status in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                if method != "GET":
                    raise FetchRefused(f"refused to follow a redirect of a {method} to "
                                       f"{resp.headers['Location']}", current)
                current = urljoin(current, resp.headers["Location"])
                continue
            if resp.status >= 400:
                raise FetchFailed(f"{current} answered HTTP {resp.status}", current)
            body, truncated = _read_capped(resp, max_bytes, deadline, current)
            ctype = resp.headers.get("Content-Type", "")
            mime, _, rest = ctype.partition(";")
            charset = None
            for param in rest.split(";"):
                key, _, value = param.strip().partition("=")
                if key.lower() == "charset" and value:
                    charset = value.strip('"\' ')
            return Fetched(current, resp.status, mime.strip().lower(), body, charset, truncated)
        finally:
            resp.release_conn()
            pool.close()
    raise FetchRefused(f"refused to fetch {url}: more than {max_redirects} redirects", url)


def _read_capped(resp, max_bytes: int, deadline: float, url: str) -> tuple[bytes, bool]:
    import urllib3

    parts: list[bytes] = []
    size = 0
    try:
        for chunk in resp.stream(16384):
            if time.monotonic() > deadline:
                raise FetchFailed(f"fetching {url} ran out of time", url)
            parts.append(chunk)
            size += len(chunk)
            if size >= max_bytes:
                return b"".join(parts)[:max_bytes], True
    except urllib3.exceptions.HTTPError as exc:
        raise FetchFailed(f"reading {url} failed: {exc}", url) from exc
    return b"".join(parts), False
