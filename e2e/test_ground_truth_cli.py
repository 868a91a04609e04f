"""The acceptance check as a user would run it: `simulate --truth` a day, `replay` it through the example
pipeline with the real binary, and compare the files — every injected threshold, spike and silence episode found
(one firing, one resolved, inside the episode), no anomaly outside the episodes, dead letters as planted."""

import datetime
import json
import subprocess


def load_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_simulated_day_is_found_exactly(tmp_path, worker_bin, example_pipeline):
    data, truth_path, out = tmp_path / "day.jsonl", tmp_path / "truth.json", tmp_path / "out"
    subprocess.run([str(worker_bin), "simulate", "--seed", "2026", "--sensors", "50", "-o", str(data), "--truth", str(truth_path)],
                   check=True, capture_output=True)
    subprocess.run([str(worker_bin), "replay", "-p", str(example_pipeline), "-i", str(data), "-o", str(out)],
                   check=True, capture_output=True)
    truth = json.loads(truth_path.read_text())
    anomalies = load_jsonl(out / "anomalies.jsonl")

    def ms(text):
        return int(datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)

    explained = set()
    for ep in truth["episodes"]:
        for kind in ep["expect"]:
            found = [a for a in anomalies
                     if a["sensor"] == ep["sensor"] and a["kind"] == kind
                     and ms(ep["start"]) <= ms(a["event_time"]) <= ms(ep["end"])]
            assert [a["state"] for a in found] == ["firing", "resolved"], (ep, found)
            explained.update(a["id"] for a in found)
    unexplained = [a for a in anomalies if a["id"] not in explained]
    assert unexplained == []
    kinds = {k for ep in truth["episodes"] for k in ep["expect"]}
    assert kinds == {"threshold", "spike", "silence"}
    assert any(not ep["expect"] for ep in truth["episodes"]), "drifts and stuck sensors are in the data"

    reasons = {}
    for d in load_jsonl(out / "dead_letters.jsonl"):
        reasons[d["reason"]] = reasons.get(d["reason"], 0) + 1
    assert reasons == truth["dead_letters"]
    assert len(reasons) == 6
