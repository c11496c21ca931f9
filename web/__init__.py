"""HTTP surfaces beyond Pipecat's runner: health, metrics, the dashboard, platform endpoints.

``health`` (``/health`` and ``/metrics``), ``dashboard`` (the business's pages), ``vapi`` and
``platform_api`` (the platform endpoints, mounted by ``platforms``, sharing ``calls`` and
``auth``). Like :mod:`cli`, each is a thin door onto :mod:`memory`; the Twilio webhook Pipecat's
runner serves stays in :mod:`bot.twilio`.
"""
