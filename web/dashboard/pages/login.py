"""Logging in and out (``/dashboard/login``, ``/dashboard/logout``)."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse

from memory.models import clean_text
from web.dashboard.access import LOGIN_COOKIE, SESSION_COOKIE, SESSION_SECONDS
from web.dashboard.context import PREFIX, PageContext, PageRouter, StaleFormError, back


def router(context: PageContext) -> PageRouter:
    """The login form, the login itself and the logout."""
    routes = PageRouter()
    access = context.access

    @routes.page("/login")
    async def login_form(request: Request) -> Any:
        nonce = secrets.token_hex(16)
        response = context.render(request, "login.html", None, login_csrf=access.login_token(nonce))
        access.set_cookie(response, request, LOGIN_COOKIE, nonce, 600)
        return response

    @routes.post("/login")
    async def login(request: Request) -> Any:
        address = request.client.host if request.client else "unknown"
        form = await context.form(request)
        user = clean_text(form.get("name", ""), 40) or "dashboard"
        if await access.throttle.blocked(address, user):
            return HTMLResponse("Too many failed logins: wait a minute.", status_code=429)
        nonce = request.cookies.get(LOGIN_COOKIE, "")
        if not nonce or form.get("csrf", "") != access.login_token(nonce):
            raise StaleFormError
        if access.open:
            return back(PREFIX)
        if not await access.check_password(address, user, form.get("password", "")):
            response = context.render(
                request,
                "login.html",
                None,
                login_csrf=access.login_token(nonce),
                error="Wrong password.",
            )
            response.status_code = 401
            return response
        signed = back(PREFIX)
        access.set_cookie(
            signed, request, SESSION_COOKIE, access.session_cookie(user), SESSION_SECONDS
        )
        signed.delete_cookie(LOGIN_COOKIE, path=PREFIX)
        return signed

    @routes.post("/logout")
    async def logout(request: Request) -> Any:
        await context.posted(request)
        response = back(f"{PREFIX}/login")
        response.delete_cookie(SESSION_COOKIE, path=PREFIX)
        return response

    return routes
