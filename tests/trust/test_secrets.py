"""No credentials at rest: run.json, manifests, the report's inputs and logs (issue 17)."""
from __future__ import annotations

import json
import logging

from curation.secrets import MASK, RedactingFilter, redact

SECRETS = ["AKIAEXAMPLEKEY", "wJalrXUtnFEMIexamplesecret", "FQoGZXIvYXdzEXAMPLEsession", "hunter2", "sig0123"]


def _opts():
    return {"key": SECRETS[0], "secret": SECRETS[1], "endpoint_url": "http://127.0.0.1:9",
            "client_kwargs": {"region_name": "us-east-1", "aws_session_token": SECRETS[2]}}


def test_run_json_holds_no_credentials(tmp_path):
    from curation.runner.executor import RunRecord
    from curation.runner.spec import load_pipeline

    doc = {"name": "t", "input": f"https://user:{SECRETS[3]}@127.0.0.1:9/u.parquet?X-Amz-Signature={SECRETS[4]}",
           "output": str(tmp_path / "run"), "storage_options": _opts(),
           "stages": [{"stage": "download", "config": {"image_size": 16}}]}
    p = load_pipeline(doc)
    rec = RunRecord(p)
    rec.save()
    text = (tmp_path / "run" / "run.json").read_text()
    for s in SECRETS:
        assert s not in text
    saved = json.loads(text)
    assert saved["spec"]["storage_options"]["key"] == MASK
    assert saved["spec"]["storage_options"]["endpoint_url"] == "http://127.0.0.1:9"  # not a secret: kept
    assert saved["spec"]["storage_options"]["client_kwargs"]["region_name"] == "us-east-1"
    assert p.storage_options["key"] == SECRETS[0]  # the running pipeline still has them


def test_manifest_history_and_report_inputs_hold_no_credentials(tmp_path):
    from curation.io import DatasetWriter
    from curation.report.load import history_stages

    w = DatasetWriter(str(tmp_path / "ds"), stage="download",
                      config={"input": f"https://127.0.0.1:9/u.parquet?token={SECRETS[4]}", "api_key": SECRETS[0]})
    with w.shard(0) as sw:
        sw.add({"uid": "a", "status": "http_404"})
    ds = w.commit([0])
    text = (tmp_path / "ds" / "manifest.json").read_text()
    assert SECRETS[0] not in text and SECRETS[4] not in text
    assert all(SECRETS[0] not in json.dumps(s) for s in history_stages(ds))


def test_logs_are_redacted(caplog):
    log = logging.getLogger("curation.test_secrets")
    log.addFilter(RedactingFilter())
    with caplog.at_level(logging.INFO, logger="curation.test_secrets"):
        log.info("opening %s with %s", f"s3://u:{SECRETS[3]}@b/k", {"secret": SECRETS[1]})
    assert SECRETS[3] not in caplog.text and SECRETS[1] not in caplog.text and "s3://u:***@b/k" in caplog.text


def test_redact_keeps_ordinary_settings():
    cfg = {"max_new_tokens": 30, "tokenizer": "x", "user_agent_token": "curation", "keep_columns": ["a"],
           "url_col": "url", "password": "", "nested": [{"Authorization": "Bearer abc"}]}
    out = redact(cfg)
    assert out["max_new_tokens"] == 30 and out["tokenizer"] == "x" and out["user_agent_token"] == "curation"
    assert out["keep_columns"] == ["a"] and out["nested"][0]["Authorization"] == MASK
