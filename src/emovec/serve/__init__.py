"""`emovec serve`: a local web app (monitor heatmap, steering sliders, vector-space explorer).

The only package that imports the web framework; it owns no method logic: `engine` calls the library,
`app` maps HTTP requests onto it, `static/` holds every asset the page needs (no network).
"""
