"""Values the tests share: one pepper for every caller key (``RAPPORT_PEPPER`` as text)."""

PEPPER = "test-pepper-0123456789abcdef0123"
PEPPER_BYTES = PEPPER.encode()
#: The key the fake Anthropic server accepts.
API_KEY = "test-key"
