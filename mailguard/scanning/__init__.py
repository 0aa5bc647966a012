"""The QUEUE stage (stage.py): runs the pipeline's QUEUE checks (clamd, spamd — in
checks/), then queues one copy per group of recipients with equal dispositions
(grouping.py)."""
