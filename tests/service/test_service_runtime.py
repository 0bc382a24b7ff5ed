"""How the runtime sizes ONNX Runtime's intra-op thread pool and its calls."""

from __future__ import annotations

import numpy as np
import pytest
from service_support import MODEL_DIR, make_settings

from service.model_repo import load_model_dir
from service.runtime import CPU, CUDA, GraphKind, Runtime, call_max_rows, intra_op_threads

SPEC = load_model_dir(MODEL_DIR)


@pytest.mark.parametrize(
    ("cores", "workers", "expected"), [(1, 1, 1), (2, 1, 1), (2, 2, 1), (4, 1, 4), (8, 2, 4), (4, 8, 1)]
)
def test_unset_threads_are_derived_from_cores_and_workers(cores, workers, expected):
    assert intra_op_threads(make_settings(workers=workers), cores=cores) == expected


def test_explicit_threads_win_over_the_derived_default():
    assert intra_op_threads(make_settings(intra_op_threads=3), cores=2) == 3


def test_session_gets_the_chosen_thread_count():
    runtime = Runtime(load_model_dir(MODEL_DIR), make_settings(intra_op_threads=2))
    assert runtime.intra_op_threads == 2
    session = runtime._graphs[runtime.graphs[0]][1]
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


@pytest.mark.parametrize(
    ("setting", "provider", "expected"), [(0, CPU, 64), (0, CUDA, None), (128, CPU, 128), (128, CUDA, 128)]
)
def test_calls_are_max_batch_rows_on_the_cpu_unbounded_on_a_gpu_unless_set(setting, provider, expected):
    settings = make_settings(max_batch=64, ort_call_max_rows=setting)
    assert call_max_rows(settings, [provider, CPU]) == expected


class Counting:
    """A session's ``run``, recording each call's rows."""

    def __init__(self, session):
        self.session, self.rows = session, []

    def run(self, outputs, feed):
        self.rows.append(len(next(iter(feed.values()))))
        return self.session.run(outputs, feed)


def counted(runtime: Runtime) -> Counting:
    graph, session = runtime._graphs[GraphKind.MAIN]
    counting = Counting(session)
    runtime._graphs[GraphKind.MAIN] = (graph, counting)
    return counting


@pytest.mark.parametrize(("n", "calls"), [(256, [64, 64, 64, 64]), (100, [64, 36]), (64, [64]), (3, [3])])
def test_a_larger_batch_runs_as_calls_of_max_batch_rows_with_the_same_bytes(n, calls):
    rng = np.random.default_rng(n)
    z = rng.standard_normal((n, SPEC.latent_dim), dtype=np.float32)
    labels = rng.integers(0, SPEC.num_classes, n)
    runtime = Runtime(SPEC, make_settings(max_batch=64))
    whole = Runtime(SPEC, make_settings(max_batch=64, ort_call_max_rows=4096))
    counting, one = counted(runtime), counted(whole)
    np.testing.assert_array_equal(
        runtime.run(GraphKind.MAIN, z, labels), whole.run(GraphKind.MAIN, z, labels)
    )
    assert counting.rows == calls and one.rows == [n]
