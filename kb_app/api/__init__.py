"""kb over HTTP (`kb serve`): kb's REST API, Dify's external knowledge API and MCP, over `kb_app.service`."""

from kb_app.api.app import create_app

__all__ = ["create_app"]
