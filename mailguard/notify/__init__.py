"""Mail that mailguard writes itself: virus warnings (templates per language) and the
admin alert for outbound abuse."""
