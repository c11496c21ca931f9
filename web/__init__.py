"""HTTP surfaces beyond Pipecat's runner: health, metrics, the dashboard, platform endpoints.

Empty until those land (a Vapi endpoint and an HTTP API among them). Like :mod:`cli`, each is
a thin door onto :mod:`memory`; the Twilio webhook Pipecat's runner serves stays in
:mod:`bot.twilio`.
"""
