"""One self-contained package per incident; incidents never import each other."""
