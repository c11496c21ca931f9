"""Protocol-faithful local fakes of the cloud APIs Rapport talks to, reached through real SDKs."""
