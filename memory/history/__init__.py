"""The call history in SQL: every call, its analysis and redacted transcript, beyond Redis."""
