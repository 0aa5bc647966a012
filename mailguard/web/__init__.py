"""`mailguard web`: the page where mail users log in and set their spam filtering
(app.py: routes and sessions; forms.py: the form rules; templates/: the HTML)."""
