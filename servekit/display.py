"""Display objects shared by the magics and the CLI (plain text and HTML; no IPython needed)."""

from __future__ import annotations

from html import escape

from .server import Server, mask_key


def server_row(server: Server) -> dict[str, str]:
    """One server as the listings show it (``%servers``, ``servekit ps``): never the whole key."""
    return {
        "name": server.name, "engine": server.engine.name, "model": server.model, "url": server.base_url,
        "pid": str(server.pid), "state": server.state_text, "kept": "yes" if server.detached else "",
        "key": mask_key(server.api_key),
    }


class ServerTable:
    """Display object for ``%servers``: HTML in notebooks, plain text elsewhere."""

    columns = ("name", "engine", "model", "url", "pid", "state", "kept", "key")

    def __init__(self, servers: list[Server]):
        self.rows = [tuple(server_row(s)[c] for c in self.columns) for s in servers]

    def __repr__(self) -> str:
        if not self.rows:
            return "No servekit servers are running."
        widths = [max(len(c), *(len(r[i]) for r in self.rows)) for i, c in enumerate(self.columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(self.columns, widths)).rstrip()]
        lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in self.rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        if not self.rows:
            return "<i>No servekit servers are running.</i>"
        head = "".join(f"<th>{c}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{escape(v)}</td>" for v in row) + "</tr>" for row in self.rows)
        return f"<table><tr>{head}</tr>{body}</table>"
