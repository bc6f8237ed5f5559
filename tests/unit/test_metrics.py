import math

from servekit.metrics import parse

TEXT = """\
# HELP llamacpp:tokens_predicted_total Number of generation tokens processed.
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 120
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 1
vllm:time_to_first_token_seconds_bucket{le="0.5",model_name="m"} 3
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 4
vllm:time_to_first_token_seconds_count{model_name="m"} 4
vllm:time_to_first_token_seconds_sum{model_name="m"} 1.2
"""

NAMES = {
    "generation_tokens_total": "llamacpp:tokens_predicted_total",
    "requests_running": "llamacpp:requests_processing",
    "ttft_seconds": "vllm:time_to_first_token_seconds",
    "kv_cache_usage": "not:present",
}


def test_counters_gauges_and_histograms_are_normalised():
    snap = parse(TEXT, NAMES)
    assert snap["generation_tokens_total"] == 120
    assert snap["requests_running"] == 2
    assert snap.get("kv_cache_usage") is None
    hist = snap.histograms["ttft_seconds"]
    assert hist.count == 4 and math.isclose(hist.mean, 0.3)
    assert math.isclose(hist.quantile(0.5), 0.1 + 0.4 * 0.5)  # rank 2 lies halfway into (0.1, 0.5]
    assert hist.quantile(0.99) == 0.5  # beyond the last finite bucket
