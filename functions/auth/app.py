"""AuthFunction: `/api/auth/*` (sign-up, login, refresh, logout, the current user)."""

from auth_routes import router

from taskapi.factory import create_app, make_handler
from taskapi.passwords import prepare_password_checks

app = create_app(
    title="Task API: auth",
    description="Accounts, login sessions and JWT access and refresh tokens.",
    # Sign-up, login and refresh answer with tokens; every other route is authenticated.
    private=True,
)
app.include_router(router)
prepare_password_checks()

handler = make_handler(app)
