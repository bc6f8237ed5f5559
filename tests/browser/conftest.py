"""The notebooks here are run by the browser test in JupyterLab, not by nbval."""

collect_ignore_glob = ["*.ipynb"]
