"""Sphinx extension: drop repeated <script> entries from each page.

The stock Jupyter Book 1 build adds sphinx-thebe's inline script twice, so every page's
console shows ``SyntaxError: Identifier 'THEBE_JS_URL' has already been declared``.
This keeps the first of any scripts with the same source file, inline body and attributes.
"""


def _key(script):
    attrs = getattr(script, "attributes", {}) or {}
    # inline scripts carry filename None or "" depending on who added them
    return (getattr(script, "filename", None) or "", tuple(sorted((k, str(v)) for k, v in attrs.items())))


def _dedupe(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe, priority=900)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
