"""Who may call a platform endpoint: a shared secret, compared in constant time.

Vapi sends the secret of its server credential as ``X-Vapi-Secret`` or as
``Authorization: Bearer <secret>``; the HTTP API takes its key as a bearer token. Either way a
request without the right secret gets 401 before it is read any further, and without a
configured secret the endpoints are not mounted at all (see :func:`require_secret`).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable

from fastapi import HTTPException, Request, status


def presented_secrets(request: Request, *, headers: Iterable[str] = ()) -> list[str]:
    """The secrets a request presents: its bearer token, then the named headers' values."""
    found = []
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        found.append(token.strip())
    found += [value for name in headers if (value := request.headers.get(name, "").strip())]
    return found


def secret_matches(expected: str, presented: Iterable[str]) -> bool:
    """Whether any presented secret equals ``expected`` (constant time; empty never matches)."""
    wanted = expected.encode()
    return bool(wanted) and any(hmac.compare_digest(wanted, p.encode()) for p in presented)


def require_secret(
    secret: str, *, headers: Iterable[str] = (), realm: str = "rapport"
) -> Callable[[Request], Awaitable[None]]:
    """A FastAPI dependency refusing, with 401, every request without ``secret``.

    Args:
        secret: The shared secret (a blank one refuses everything).
        headers: Headers that may carry it besides ``Authorization: Bearer``.
        realm: Named in the ``WWW-Authenticate`` challenge.
    """
    names = tuple(headers)

    async def check(request: Request) -> None:
        if not secret_matches(secret.strip(), presented_secrets(request, headers=names)):
            raise HTTPException(
                status_code=status.HTTP_401_UNAUTHORIZED,
                detail="missing or wrong secret",
                headers={"WWW-Authenticate": f'Bearer realm="{realm}"'},
            )

    return check
