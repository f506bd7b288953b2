"""The operator dashboard: server-rendered pages of the alarm queue and of each alarm, with a little
JavaScript that refreshes them in place and sends commands through the operator API."""

from flask import Blueprint

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static")

from app.web.dashboard import views  # noqa: E402, F401  - registers the routes on bp
