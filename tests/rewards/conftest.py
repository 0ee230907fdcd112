"""Every rewards test leaves the plugin registry as it found it (plugin files register names as they import)."""
import pytest

from tunewise.rewards import plugins


@pytest.fixture(autouse=True)
def clean_registry():
    saved = dict(plugins.REGISTRY)
    yield
    plugins.REGISTRY.clear()
    plugins.REGISTRY.update(saved)
