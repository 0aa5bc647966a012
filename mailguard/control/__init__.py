"""The daemon's unix control socket (docs/control-socket.md). Keep this file empty of
imports: the lean entry points import `mailguard.control.protocol`."""
