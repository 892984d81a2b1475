"""The TLS settings every connection to a server uses."""

from __future__ import annotations

import ssl


def tls_context(verify: bool, ca_file: str) -> ssl.SSLContext:
    """Certificate and host name checks on unless the config turns them off, with an extra CA."""
    context = ssl.create_default_context(cafile=ca_file or None)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
