"""The business's web dashboard: follow-ups, calls, callers' memory, the queue and the audit.

Server-rendered (Jinja2, autoescaped, no script), served at ``/dashboard`` by the bot's server
(:func:`add_dashboard_routes`) or alone (``python runner.py dashboard``, :func:`dashboard_app`).
"""

from web.dashboard.access import DashboardAccess, DashboardSettings
from web.dashboard.routes import (
    DashboardMemory,
    add_dashboard_routes,
    dashboard_app,
    dashboard_memory,
)

__all__ = [
    "DashboardAccess",
    "DashboardMemory",
    "DashboardSettings",
    "add_dashboard_routes",
    "dashboard_app",
    "dashboard_memory",
]
