"""Where accepted mail goes: the Delivery interface and one module per hand-over
(`maildir`: the embedded Maildir spool; `qmail_queue`: the real qmail-queue)."""
