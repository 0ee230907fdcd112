"""Every rewards test starts from an empty plugin registry (whatever tests elsewhere in the session registered) and
leaves it as it found it (plugin files register names as they import)."""
import pytest

from tunewise.rewards import plugins


@pytest.fixture(autouse=True)
def clean_registry():
    saved = dict(plugins.REGISTRY)
    plugins.REGISTRY.clear()
    yield
    plugins.REGISTRY.clear()
    plugins.REGISTRY.update(saved)
