"""A small Django project (the startproject defaults, a template view, a JSON view) whose
workers' memory bench/compare.sh measures with and without preload."""
