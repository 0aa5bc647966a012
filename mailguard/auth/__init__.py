"""Credential checks for SMTP AUTH: mailguard's own `mail_user` table (argon2) or a qmail
`checkpassword` program, and the per-IP failed-login counter."""
