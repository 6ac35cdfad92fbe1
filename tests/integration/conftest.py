import pytest

from tests.integration.nodeproc import NodeProcess


@pytest.fixture
def node(tmp_path):
    """A running node process on 127.0.0.1 with a fresh data folder; SIGKILLed after the test."""
    proc = NodeProcess(str(tmp_path / "node")).start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
def make_node(tmp_path):
    """Factory for extra node processes; every one is killed after the test."""
    made = []

    def make(name: str = "node", **kwargs):
        proc = NodeProcess(str(tmp_path / name), **kwargs)
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.kill()


@pytest.fixture
def nodes():
    """A list for the test to append the node processes it starts; every one is killed after."""
    made: list[NodeProcess] = []
    yield made
    for proc in made:
        proc.kill()
