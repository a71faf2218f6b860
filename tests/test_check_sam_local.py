"""`make check-sam-local`'s reading of `sam local invoke`'s output (tools/check_sam_local.py);
the containers themselves run in `make check-sam-local`."""

import json

from tools.check_sam_local import answer_in

EMF = {"_aws": {"Timestamp": 1, "CloudWatchMetrics": []}, "DatabaseUp": 1}
HEALTH = {"status": "ok", "database": "ok", "migrations": {"up_to_date": True}}


def test_the_answer_is_found_after_the_functions_own_lines() -> None:
    printed = "\n".join(["START RequestId: x", json.dumps(EMF), json.dumps(HEALTH)])
    assert answer_in(printed) == HEALTH


def test_the_answer_is_found_when_a_metrics_record_shares_its_line() -> None:
    # As SAM 1.170 printed the scheduled health check: the answer, then the EMF record.
    assert answer_in(json.dumps(HEALTH) + json.dumps(EMF) + "\n") == HEALTH
    assert answer_in(json.dumps(EMF) + json.dumps(HEALTH)) == HEALTH


def test_no_answer_is_none() -> None:
    assert answer_in("") is None
    assert answer_in(json.dumps(EMF) + "\nnot json {") is None
