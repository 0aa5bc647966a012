"""The `mailguard` command line: one module per command group, cheap to import (each
handler imports its machinery when it runs)."""
