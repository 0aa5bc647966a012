"""Configuration sections of the features, one light module each (standard library only:
the lean entry points load the whole configuration). `mailguard.config` assembles them."""
