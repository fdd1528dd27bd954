"""HTTP routes: thin translations between requests and services."""
