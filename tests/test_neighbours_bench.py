"""scripts/bench_neighbours.py's core for one setting: the server's default priority (nice 5) beside
two CPU-bound neighbours starts listening, and a softphone's call gets a voiced reply whose media
summary the benchmark can read. Behaviour only: how fast is the benchmark's business, not a test's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from peers import skips
from sipagent.voice.models import DEFAULT_LLM_MODEL, DEFAULT_STT_MODEL, resolve_model_path
from tests.model_gate import require_models

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
if str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))  # the benchmark commands import their benchkit package from there

from benchkit.neighbours import DEFAULT_SETTING, caller_audio, run_setting  # noqa: E402

pytestmark = pytest.mark.peer


@pytest.mark.timeout(300)  # start-up (up to 120 s on a loaded box) + one ~25 s call + teardown
def test_default_priority_listens_and_answers_beside_two_busy_neighbours(tmp_path: Path) -> None:
    skips.require("baresip")
    skips.require_capture()
    require_models(resolve_model_path(DEFAULT_STT_MODEL) / "model.bin", resolve_model_path(DEFAULT_LLM_MODEL))
    # 20 s of room tone after the speech: the reply may come late beside the neighbours and the
    # other tests pytest runs meanwhile; the test asks only that it comes.
    audio = caller_audio(tmp_path, tail_s=20.0)
    run = run_setting(DEFAULT_SETTING, 2, calls=1, audio=audio, workdir=tmp_path / "run", listen_timeout=120)
    assert run.listen_s is not None, f"{run.error}\n{run.log_tail}"
    assert run.neighbours_alive == 2  # they kept the cores busy for the whole run
    (call,) = run.calls
    assert call.error is None, f"{call.error}\n{run.log_tail}"
    assert call.answered, f"{call.voiced_packets} voiced packets after the end of speech\n{run.log_tail}"
    assert call.latency_s is not None and call.latency_s > 0
    assert call.media_p99_ms is not None and call.media_p50_ms is not None, run.log_tail
    assert run.inference_seen == "nice 5"
