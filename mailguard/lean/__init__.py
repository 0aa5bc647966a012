"""The per-connection / per-message entry points (`mailguard smtpd`, `mailguard queue`):
standard library only, importing as little as possible, because qmail starts them once
per connection or message. They hand their descriptors to the daemon and wait."""
