"""During and right after a call: who may be remembered, recording, closing, platform sessions."""
