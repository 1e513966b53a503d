"""The Streamlit narrative viewer (`autopsy app`). Not installed with the package: run from a checkout."""
