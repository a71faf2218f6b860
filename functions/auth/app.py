"""AuthFunction: `/api/auth/*` (sign-up, login, refresh, logout, the current user, and the
account: password, sessions, deletion, password reset, profile, email change, security log)."""

import account_routes
import auth_routes
import profile_routes
from taskapi.factory import create_app, make_handler
from taskapi.passwords import prepare_password_checks
from taskapi.snapstart import prepare_for_snapshot

app = create_app(
    title="Task API: auth",
    description="Accounts, login sessions and JWT access and refresh tokens.",
    # Sign-up, login and refresh answer with tokens; every other route is authenticated.
    private=True,
    routers=[auth_routes.router, account_routes.router, profile_routes.router],
)
prepare_password_checks()

handler = make_handler(app)
# SnapStart (EnableSnapStart): a login refused by validation warms the path before the
# snapshot; the dummy hash is already made above.
prepare_for_snapshot(handler, requests=[("POST", "/api/auth/login", "{}")])
