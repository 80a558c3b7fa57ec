"""The Prometheus metrics (sipagent/product/metrics.py): the text parses, values move as the server
reports, label values stay in their bounded sets, and no label carries a call id."""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from sipagent.product.metrics import Metrics
from sipagent.voice.conversation.record import TurnRecord

CALL_ID = "a84b4c76e66710@pc33.example.com"


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def _value(metrics: Metrics, name: str, **labels: str) -> float:
    return _samples(metrics).get((name, tuple(sorted(labels.items()))), 0.0)


def test_render_parses_and_values_move() -> None:
    metrics = Metrics(tool_names=["lookup_order"], trunks=["twilio"])
    assert _value(metrics, "sipagent_active_calls") == 0
    assert _value(metrics, "sipagent_registration_up", trunk="twilio") == 0

    metrics.call_started("inbound")
    metrics.call_started("outbound")
    assert _value(metrics, "sipagent_active_calls") == 2
    assert _value(metrics, "sipagent_calls_started_total", direction="inbound") == 1
    metrics.call_ended("outbound", "busy")
    assert _value(metrics, "sipagent_active_calls") == 1
    assert _value(metrics, "sipagent_calls_ended_total", direction="outbound", outcome="busy") == 1

    metrics.turn(
        wire_ms=450.0, stt_ms=148.0, llm_first_token_ms=90.0, tts_first_audio_ms=None, interrupted=False
    )
    record = TurnRecord(
        turn=2, latency_ms=1200.0, stt_ms=150.0, llm_first_token_ms=None, tts_first_audio_ms=240.0
    )
    metrics.turn_record(record, interrupted=True)
    assert _value(metrics, "sipagent_turn_latency_seconds_count") == 2
    assert abs(_value(metrics, "sipagent_turn_latency_seconds_sum") - 1.65) < 1e-9
    assert _value(metrics, "sipagent_turn_latency_seconds_bucket", le="0.5") == 1
    assert _value(metrics, "sipagent_turn_stage_seconds_count", stage="stt") == 2
    assert _value(metrics, "sipagent_turn_stage_seconds_count", stage="llm_first_token") == 1
    assert _value(metrics, "sipagent_turn_stage_seconds_count", stage="tts_first_audio") == 1
    assert _value(metrics, "sipagent_turns_total", interrupted="true") == 1

    metrics.barge_in()
    metrics.resume()
    metrics.resume()
    metrics.amd("machine")
    metrics.amd("fax")  # outside the set
    assert _value(metrics, "sipagent_barge_ins_total") == 1
    assert _value(metrics, "sipagent_false_interruption_resumes_total") == 2
    assert _value(metrics, "sipagent_amd_results_total", result="machine") == 1
    assert _value(metrics, "sipagent_amd_results_total", result="other") == 1

    metrics.tool_call("lookup_order", True)
    metrics.tool_call("end_call", True)
    metrics.tool_call("made_up_by_the_model", False)
    assert _value(metrics, "sipagent_tool_calls_total", tool="lookup_order", result="ok") == 1
    assert _value(metrics, "sipagent_tool_calls_total", tool="end_call", result="ok") == 1
    assert _value(metrics, "sipagent_tool_calls_total", tool="other", result="error") == 1

    metrics.registration("twilio", True)
    assert _value(metrics, "sipagent_registration_up", trunk="twilio") == 1
    metrics.registration("twilio", False)
    assert _value(metrics, "sipagent_registration_up", trunk="twilio") == 0

    metrics.rtp(lost=3, late=1, jitter_ms=12.0)
    metrics.rtp(lost=-1, late=0, jitter_ms=None)
    assert _value(metrics, "sipagent_rtp_packets_lost_total") == 3
    assert _value(metrics, "sipagent_rtp_packets_late_total") == 1
    assert _value(metrics, "sipagent_rtp_jitter_seconds_count") == 1

    metrics.inference_queue(4)
    assert _value(metrics, "sipagent_inference_queue_depth") == 4
    metrics.webhook_delivery("failed")
    metrics.webhook_delivery("dropped")
    assert _value(metrics, "sipagent_lifecycle_webhooks_total", result="failed") == 1
    assert _value(metrics, "sipagent_lifecycle_webhooks_total", result="dropped") == 1


def test_servers_do_not_share_counters_nor_the_global_registry() -> None:
    first, second = Metrics(), Metrics()
    first.barge_in()
    assert _value(first, "sipagent_barge_ins_total") == 1
    assert _value(second, "sipagent_barge_ins_total") == 0
    assert REGISTRY.get_sample_value("sipagent_barge_ins_total") is None


def test_no_label_carries_a_call_id() -> None:
    metrics = Metrics(tool_names=["lookup_order"], trunks=["twilio"])
    # Everything a server might be tempted to pass a call's identity through.
    metrics.call_started(CALL_ID)
    metrics.call_ended(CALL_ID, CALL_ID)
    metrics.amd(CALL_ID)
    metrics.tool_call(CALL_ID, True)
    metrics.webhook_delivery(CALL_ID)
    metrics.call_started("inbound")
    metrics.turn(wire_ms=500.0, interrupted=False)
    body, _ = metrics.render()
    assert CALL_ID not in body.decode()
    allowed = {"direction", "outcome", "stage", "result", "tool", "trunk", "interrupted", "le"}
    names = {
        name
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        for name in s.labels
    }
    assert names <= allowed
