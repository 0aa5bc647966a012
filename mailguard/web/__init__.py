"""The users' web page and graphs (coming next; see the issues)."""
