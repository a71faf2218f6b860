"""AuthFunction: `/api/auth/*` (sign-up, login, refresh, logout, the current user)."""

from auth_routes import router

from taskapi.factory import create_app, make_handler
from taskapi.passwords import verify_password
from taskapi.snapstart import prepare_for_snapshot

app = create_app(
    title="Task API: auth",
    description="Accounts, login sessions and JWT access and refresh tokens.",
)
app.include_router(router)

handler = make_handler(app)
# SnapStart (EnableSnapStart): a login refused by validation warms the path, and a check
# against the dummy hash runs passlib's backend self-test (16 bcrypt rounds) and makes
# that hash, all before the snapshot rather than in a first login.
prepare_for_snapshot(
    app,
    handler,
    requests=[("POST", "/api/auth/login", "{}")],
    warm=[lambda: verify_password("snapstart warm-up", None)],
)
