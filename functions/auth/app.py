"""AuthFunction: `/api/auth/*` (sign-up, login, refresh, logout, the current user, and the
account: password, sessions, deletion)."""

import account_routes
import auth_routes

from taskapi.factory import create_app, make_handler

app = create_app(
    title="Task API: auth",
    description="Accounts, login sessions and JWT access and refresh tokens.",
)
app.include_router(auth_routes.router)
app.include_router(account_routes.router)

handler = make_handler(app)
