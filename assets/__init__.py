"""Files the app shows that are not code (style sheets, icons, screenshots), installed as
the ``app.assets`` package and found through importlib.resources."""
