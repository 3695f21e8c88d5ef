"""A small Django project for tests/python_django.rs: the same routes and answers as
flask_app.py, written the Django way (no database, no installed apps)."""
