"""`moeplan tune --ray` on a real two-node Ray cluster on this machine (`ray.cluster_utils`),
each node declaring one GPU, kernels in Triton's interpreter, the cost-model timer: the table
equals a single-process run's, both nodes measure, and a node removed mid-run costs nothing
but its configs in flight. Skipped where Ray (the `cluster` extra) is not installed."""

import json
import os
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moeplan.cli.app import app

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

pytestmark = [pytest.mark.interpreter, pytest.mark.slow]
runner = CliRunner()
TABLE = "E=4,N=32,device_name=cpu_interpreter.json"  # --interpret names its tables for the interpreter
SPACE = {"BLOCK_SIZE_M": [16, 32], "BLOCK_SIZE_N": [32, 64], "BLOCK_SIZE_K": [32], "GROUP_SIZE_M": [1],
         "num_warps": [4], "num_stages": [2]}


@pytest.fixture(scope="module")
def cluster():
    # the nodes' worker processes import moeplan from this checkout: give them its absolute path
    old = os.environ.get("PYTHONPATH")
    root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join([root] + ([old] if old else []))
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    nodes = [c.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    ray.init(address=c.address, logging_level="ERROR", log_to_driver=False)
    yield c, nodes
    ray.shutdown()
    c.shutdown()
    if old is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = old


@pytest.fixture
def model(tmp_path, tiny_model, cost_model_timer):
    (tmp_path / "space.json").write_text(json.dumps(SPACE))
    return tiny_model, tmp_path / "space.json"


def tune(model, out, *extra):
    cfg, space = model
    return runner.invoke(app, ["tune", str(cfg), "--interpret", "--batch-sizes", "2,8", "--search-space", str(space),
                               "--out", str(out), "--quiet", *extra])


def gpus_used(out):
    import pandas as pd

    return set(pd.read_csv(out / (TABLE[:-5] + ".csv"))["gpu"])


def test_unreachable_address_and_missing_extra_are_one_line(model, tmp_path, monkeypatch):
    assert not ray.is_initialized()  # runs before the cluster fixture connects this process
    r = tune(model, tmp_path / "x", "--ray", "127.0.0.1:1")
    assert r.exit_code == 2 and r.stderr.count("\n") == 1
    assert r.stderr.startswith("moeplan: error: --ray '127.0.0.1:1': cannot reach a Ray cluster: nothing answers")
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "ray" else real(n, *a))
    r = tune(model, tmp_path / "y", "--ray", "local")
    assert (r.exit_code, r.stderr) == (2, "moeplan: error: --ray needs Ray, which is not installed; install the "
                                          "cluster extra: pip install 'moeplan[cluster]'\n")


def test_two_nodes_make_the_single_process_table_and_survive_a_lost_node(cluster, model, tmp_path):
    c, nodes = cluster
    r = tune(model, tmp_path / "local")
    assert r.exit_code == 0, r.output
    expected = (tmp_path / "local" / TABLE).read_bytes()

    r = tune(model, tmp_path / "ray", "--ray", c.address)
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ray" / TABLE).read_bytes() == expected
    assert len(gpus_used(tmp_path / "ray")) == 2  # both nodes measured

    # a node removed once some configs are checkpointed: the run still finishes, same table
    out = tmp_path / "lost"
    removed = threading.Event()

    def remove_when_running():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            recs = list(out.glob(".moeplan-tune/*/records.jsonl"))
            if recs and len(recs[0].read_text().splitlines()) >= 2:
                c.remove_node(nodes[1])
                removed.set()
                return
            time.sleep(0.05)

    t = threading.Thread(target=remove_when_running)
    t.start()
    r = tune(model, out, "--ray", c.address)
    t.join()
    assert removed.is_set()
    assert r.exit_code == 0, r.output
    assert "ray: lost worker" in r.stderr  # its configs in flight ran again on the other node
    assert (out / TABLE).read_bytes() == expected
