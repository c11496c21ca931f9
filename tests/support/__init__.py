"""What the tests share: values, the call harness, servers, polling, worker helpers."""
