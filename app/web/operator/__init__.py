"""The operator surface: what people who run alarms call (self-test now; alarms as they arrive)."""

from flask import Blueprint

bp = Blueprint("operator", __name__)

from app.web.operator import views  # noqa: E402, F401  - registers the routes on bp
