"""Where a webhook may be sent: http(s) URLs whose host resolves only to public addresses,
unless `WEBHOOK_ALLOW_PRIVATE_URLS` is on. Checked when an endpoint is registered and again
at each delivery, which then connects to the very address it checked (no second lookup for
a DNS rebinding to slip in)."""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import idna
from django.conf import settings

from apps.core.errors import ApplicationError


class WebhookUrlError(ApplicationError):
    code = "invalid_url"
    title = "Webhook URL not allowed"


@dataclass(frozen=True)
class Target:
    """A checked URL: `url` names the address to connect to; `host` is the Host header and
    the TLS server name."""

    url: str
    host: str
    server_name: str


# Bytes a URL never holds as they are (RFC 3986): whitespace and control characters.
# urlsplit drops tabs and line breaks silently, so the request went elsewhere than stored.
_UNSAFE = re.compile(r"[\x00-\x20\x7f-\x9f]")


def url_check(url: str) -> Target:
    """The URL's target, or WebhookUrlError saying why it may not be used."""
    if (found := _UNSAFE.search(url)) is not None:
        raise WebhookUrlError(
            f"The URL holds {found.group()!r} at character {found.start() + 1}: spaces and "
            "control characters must be percent-encoded."
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise WebhookUrlError(f"Not a valid URL: {exc}.") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookUrlError("Only http and https URLs can receive webhooks.")
    if not parts.hostname:
        raise WebhookUrlError("The URL has no host.")
    if parts.username is not None or parts.password is not None:
        raise WebhookUrlError("The URL may not carry credentials.")
    if port == 0:
        raise WebhookUrlError("Port 0 cannot receive webhooks.")
    host = _ascii_host(parts.hostname)
    try:
        found = socket.getaddrinfo(host, port or 80, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise WebhookUrlError(f"The host {host!r} could not be resolved.") from None
    addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in found]
    if not settings.WEBHOOK_ALLOW_PRIVATE_URLS:
        for address in addresses:
            if not _public(address):
                raise WebhookUrlError(
                    f"The host {host!r} resolves to {address}, a loopback, link-local or "
                    "private address: not allowed.",
                    code="url_not_allowed",
                )
    address = addresses[0]
    literal = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{literal}:{port}" if port else literal
    named = f"[{host}]" if ":" in host else host
    header = f"{named}:{port}" if port else named
    return Target(url=urlunsplit(parts._replace(netloc=netloc)), host=header, server_name=host)


def _ascii_host(host: str) -> str:
    """The host as sent in the Host header and looked up: an internationalized domain
    name in its ASCII (IDNA, UTS #46) form, which is what HTTP carries."""
    if host.isascii():
        return host
    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise WebhookUrlError(f"The host {host!r} is not a valid domain name: {exc}.") from None


# IPv6 addresses that carry an IPv4 address in their last 32 bits and reach it: the
# deprecated IPv4-compatible ones, and NAT64's well-known prefix (RFC 6052)
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """A global unicast address; for IPv6, every IPv4 address it carries (mapped,
    compatible, NAT64, 6to4, Teredo) global too, and not site-local."""
    if not address.is_global or address.is_multicast:
        return False
    if address.version == 4:
        return True
    if address.is_site_local:  # fec0::/10, deprecated but still routed by some networks
        return False
    carried = [address.ipv4_mapped, address.sixtofour, *(address.teredo or ())]
    if address in _IPV4_COMPATIBLE or address in _NAT64:
        carried.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return all(_public(inner) for inner in carried if inner is not None)
