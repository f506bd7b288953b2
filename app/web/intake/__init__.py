"""The intake surface: where Alta zone webhooks and SIA panel events come in."""

from flask import Blueprint

bp = Blueprint("intake", __name__)

from app.web.intake import views  # noqa: E402, F401  - registers the routes on bp
