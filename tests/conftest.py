"""Suite-wide pytest configuration: the netns harness is a pytest plugin."""

pytest_plugins = ["netns.plugin"]
