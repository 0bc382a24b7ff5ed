"""How the runtime sizes ONNX Runtime's intra-op thread pool."""

from __future__ import annotations

import pytest
from service_support import MODEL_DIR, make_settings

from service.model_repo import load_model_dir
from service.runtime import Runtime, intra_op_threads


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
