"""The SMTP-time and QUEUE-stage checks: each a pure decision plus thin I/O, answering one
Verdict. Checks import neither the front end nor the daemon's wiring
(tests/unit/test_import_directions.py)."""
