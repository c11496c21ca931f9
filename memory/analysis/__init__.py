"""After the call: the analysis, the worker, fact merging, the follow-up list, the webhook."""
