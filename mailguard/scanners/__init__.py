"""asyncio clients of the content scanners (clamd, spamd), built once and shared."""
