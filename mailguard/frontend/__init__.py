"""The SMTP daemon's front end: the aiosmtpd protocol, qmail-smtpd's dialogue
(Conversation), STARTTLS, SMTP AUTH and the listeners."""
