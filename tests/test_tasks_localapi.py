"""Due dates, repeated filters, retried creates and the trash over real HTTP, through
`python -m localapi` serving template.yaml (the `{proxy+}` route takes the new paths)."""

import httpx

from tests.support.local_server import bearer, signup_over_http


def test_due_dates_retries_and_the_trash_over_http(api: httpx.Client) -> None:
    auth = bearer(signup_over_http(api, "trash@example.com")["access_token"])
    retry = {**auth, "Idempotency-Key": "local-1"}
    body = {"title": "Overdue", "due_at": "2026-01-01T10:00:00+01:00"}
    first = api.post("/api/tasks", json=body, headers=retry)
    assert first.status_code == 201, first.text
    assert first.json()["due_at"] == "2026-01-01T09:00:00Z"
    again = api.post("/api/tasks", json=body, headers=retry)
    assert (again.status_code, again.text) == (201, first.text)
    assert again.headers["idempotent-replayed"] == "true"
    done = api.post("/api/tasks", json={"title": "Done", "status": "Completed"}, headers=auth)
    assert done.status_code == 201

    both = api.get(
        "/api/tasks", params=[("status", "Pending"), ("status", "Completed")], headers=auth
    )
    assert both.json()["total"] == 2
    overdue = api.get("/api/tasks", params={"overdue": "true"}, headers=auth).json()
    assert [task["title"] for task in overdue["items"]] == ["Overdue"]

    task_url = first.headers["location"]
    assert api.delete(task_url, headers=auth).status_code == 204
    trash = api.get("/api/tasks/trash", headers=auth)
    assert trash.status_code == 200, trash.text
    (item,) = trash.json()["items"]
    restored = api.post(f"{task_url}/restore", headers={**auth, "If-Match": item["etag"]})
    assert restored.status_code == 200, restored.text
    assert api.get(task_url, headers=auth).status_code == 200
    assert api.get("/api/tasks/trash", headers=auth).json()["total"] == 0
