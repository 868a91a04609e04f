"""What a pipeline's outputs must equal: `replay --no-flush` of the input each partition's engine saw, compared
as multisets of records read back by a plain read_committed consumer (Apache Kafka filters aborted
transactions, so what it shows is what any downstream consumer sees)."""

from __future__ import annotations

import json
import os
import pathlib

from kafka_io import canonical, read_partitions, replay_partitions

KINDS = ("anomalies", "aggregates", "dead_letters")


def ends_of(inputs: dict[int, list]) -> dict[int, int]:
    """Per partition, the offset after its last record."""
    return {p: (msgs[-1].offset() + 1 if msgs else 0) for p, msgs in inputs.items()}


def dead_letter(headers, value: bytes | None) -> dict:
    h = {k: (v.decode() if v is not None else None) for k, v in (headers or [])}
    return {"reason": h.get("sensorpipe.reason"), "payload": (value or b"").decode("utf-8", "replace")}


def outputs_committed(bootstrap: str, topics: dict[str, str], partitions: int) -> dict[str, list]:
    """The committed outputs: `topics` maps anomalies, aggregates and dead_letters to topic names. With
    SENSORPIPE_E2E_DUMP=FILE they are listed there with partition and offset."""
    out = {}
    dump = os.environ.get("SENSORPIPE_E2E_DUMP")
    for kind in KINDS:
        msgs = read_partitions(bootstrap, topics[kind], partitions)
        if kind == "dead_letters":
            out[kind] = [dead_letter(m.headers(), m.value()) for ms in msgs.values() for m in ms]
        else:
            out[kind] = [json.loads(m.value()) for ms in msgs.values() for m in ms]
            if dump:
                with open(dump, "a") as f:
                    for p, ms in msgs.items():
                        for m in ms:
                            f.write(f"{kind} p{p} @{m.offset()} {json.loads(m.value())['id']}\n")
    return out


def expected(worker_bin, pipeline: pathlib.Path, inputs: dict[int, list], work: pathlib.Path) -> dict[str, list]:
    exp = replay_partitions(worker_bin, pipeline, inputs, work)
    exp["dead_letters"] = [{"reason": d["reason"], "payload": d.get("payload", "")} for d in exp["dead_letters"]]
    return exp


def assert_exactly(got: dict[str, list], exp: dict[str, list]) -> None:
    for kind in KINDS:
        g, e = canonical(got[kind]), canonical(exp[kind])
        assert len(e) > 0, f"replay produced no {kind}; the scenario is too small"
        extra, missing = sorted(set(g) - set(e)), sorted(set(e) - set(g))
        assert g == e, f"{kind}: {len(g)} emitted vs {len(e)} expected; " \
                       f"first unexpected {extra[:1]}, first missing {missing[:1]}; " \
                       f"{len(set(g) - set(e))} unexpected, {len(set(e) - set(g))} missing, " \
                       f"{len(g) - len(set(g))} duplicates"


def assert_none_lost(got: dict[str, list], exp: dict[str, list]) -> None:
    """At-least-once: every expected output is there (repeats allowed)."""
    for kind in KINDS:
        missing = set(canonical(exp[kind])) - set(canonical(got[kind]))
        assert not missing, f"{kind}: {len(missing)} lost, e.g. {sorted(missing)[:2]}"


def assert_delivered(got: dict[str, list], exp: dict[str, list], delivery: str) -> None:
    """What the delivery guarantee promises: exactly replay (exactlyOnce), or all of it (atLeastOnce)."""
    if delivery == "exactlyOnce":
        assert_exactly(got, exp)
    else:
        assert_none_lost(got, exp)
