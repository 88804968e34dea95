"""One module per tab of the main window; each page is ``Page(context, parent=None)``.

Start, Data and Train belong to the shell; Results, Predict and Models to the views.
Pages share state only through :class:`loupe.desktop.context.AppContext`.
"""
