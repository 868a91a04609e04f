"""`simulate | replay` through the real binary, with DuckDB as the batch truth for the windows.

DuckDB recomputes every 5-minute per-zone window from the same input file, minus the records the worker
dead-lettered, and each window the stream emitted must equal it: same windows, same counts, min and max, and an
average equal up to float summation order.
"""

import json
import subprocess

import duckdb


def run(cmd, **kw):
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True, **kw)


def test_windows_equal_duckdb_recomputation(tmp_path, worker_bin, example_pipeline):
    data = tmp_path / "day.jsonl"
    truth = tmp_path / "truth.json"
    out = tmp_path / "out"
    run([worker_bin, "simulate", "--sensors", "30", "--zones", "3", "--duration", "12h", "--seed", "11",
         "--output", data, "--truth", truth])
    summary = json.loads(run([worker_bin, "replay", "-p", example_pipeline, "-i", data, "-o", out]).stderr)

    dead = [json.loads(line) for line in (out / "dead_letters.jsonl").read_text().splitlines()]
    assert summary["dead_letters"] == len(dead) > 0
    expected_dead = json.loads(truth.read_text())["dead_letters"]
    assert summary["dead_letters_by_reason"] == expected_dead
    skipped = {int(d["source"].removeprefix("line ")) for d in dead}

    accepted = tmp_path / "accepted.jsonl"
    with data.open() as src, accepted.open("w") as dst:
        for i, line in enumerate(src, start=1):
            if i not in skipped:
                dst.write(line)
    con = duckdb.connect()
    batch = con.execute(
        """
        SELECT zone, timestamp * 1000 // 300000 * 300000 AS start,
               count(temperature), min(temperature), max(temperature), avg(temperature),
               count(humidity), min(humidity), max(humidity), avg(humidity)
        FROM read_json(?, format = 'newline_delimited',
                       columns = {zone: 'VARCHAR', timestamp: 'BIGINT', temperature: 'DOUBLE', humidity: 'DOUBLE'})
        GROUP BY ALL ORDER BY start, zone
        """,
        [str(accepted)],
    ).fetchall()
    assert len(batch) == 3 * 144

    streamed = {}
    for line in (out / "aggregates.jsonl").read_text().splitlines():
        a = json.loads(line)
        start = duckdb.sql(f"SELECT epoch_ms(TIMESTAMPTZ '{a['window_start']}')").fetchone()[0]
        assert (a["key"], start) not in streamed, "each window is emitted once"
        streamed[(a["key"], start)] = a["stats"]
    assert set(streamed) == {(z, s) for z, s, *_ in batch}

    for zone, start, tc, tmin, tmax, tavg, hc, hmin, hmax, havg in batch:
        s = streamed[(zone, start)]
        for metric, (count, lo, hi, avg) in (("temperature", (tc, tmin, tmax, tavg)), ("humidity", (hc, hmin, hmax, havg))):
            got = s[metric]
            assert (got["count"], got["min"], got["max"]) == (count, lo, hi), (zone, start, metric)
            assert abs(got["avg"] - avg) <= 1e-9 * abs(avg), (zone, start, metric, got["avg"], avg)


def test_replay_reads_stdin_and_reports_bad_pipelines(tmp_path, worker_bin, example_pipeline):
    reading = '{"sensor_id":"room_101","temperature":35.3,"timestamp":1673018400,"zone":"floor-1"}\n'
    later = '{"sensor_id":"room_101","temperature":35.1,"timestamp":1673018460,"zone":"floor-1"}\n'
    out = tmp_path / "out"
    run([worker_bin, "replay", "-p", example_pipeline, "-o", out], input=reading + later)
    anomalies = [json.loads(line) for line in (out / "anomalies.jsonl").read_text().splitlines()]
    assert [(a["rule"], a["state"], a["sensor"]) for a in anomalies] == [("overheat", "firing", "room_101")]

    bad = tmp_path / "bad.yaml"
    bad.write_text(example_pipeline.read_text().replace("clear: 29", "clear: 31"))
    proc = subprocess.run([str(worker_bin), "replay", "-p", str(bad), "-o", str(out)], input="", capture_output=True, text=True)
    assert proc.returncode != 0
    assert "processing.thresholds[0].clear: 31 must be at or below the limit 30" in proc.stderr
