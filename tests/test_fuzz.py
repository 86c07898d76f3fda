"""The API fuzzed from its own OpenAPI schema: schemathesis (its command line, fixed seed, bounded examples)
against a real `avgen serve --workers 0` on 127.0.0.1. No answer may be a 5xx, and every answer must match
the schema: its status code documented, its content type documented, its body valid against the schema.

One check is left out: `positive_data_acceptance` expects every schema-valid request to be accepted, but some
are refused for what a schema cannot say (a generate body with neither text, audio nor seconds; an upload that
is not media; an id that names no job). Those refusals are documented 4xx problems, which the other checks
do verify."""

from __future__ import annotations

import subprocess
import sys

from test_api import KEY_A, serve


def test_fuzzing_the_openapi_schema_finds_no_5xx_and_no_answer_outside_the_schema(tmp_path):
    with serve(tmp_path, AVGEN_MAX_QUEUED_PER_KEY="1000") as server:
        cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{server['url']}/openapi.json",
               "--header", f"Authorization: Bearer {KEY_A}", "--seed", "20261130", "--max-examples", "25",
               "--checks", "all", "--exclude-checks", "positive_data_acceptance", "--phases", "examples,coverage,fuzzing", "--workers", "1",
               "--request-timeout", "30", "--no-color"]  # fmt: skip
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        report = run.stdout[-8000:] + run.stderr[-2000:]
        assert run.returncode == 0, report
        assert "no issues found" in run.stdout.lower() or " passed" in run.stdout, report
        # the server lived through it
        assert subprocess.run(["kill", "-0", str(server["proc"].pid)]).returncode == 0
